package identity

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// fromWorkloadAPI obtains the first SVID and trust bundle from the node
// agent's SPIFFE Workload API.
func (s *Source) fromWorkloadAPI(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	xc, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(s.cfg.WorkloadAPIAddr))
	if err != nil {
		return fmt.Errorf("%w: Workload API %s: %v", ErrNoSVID, s.cfg.WorkloadAPIAddr, err)
	}
	svid := xc.DefaultSVID()
	if svid == nil {
		return fmt.Errorf("%w: the Workload API gave no SVID", ErrNoSVID)
	}
	bundle, err := xc.Bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return fmt.Errorf("%w: the Workload API gave no bundle for %s", ErrNoSVID, svid.ID.TrustDomain())
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(s.now())); err != nil {
		return fmt.Errorf("%w: the Workload API's SVID does not verify: %v", ErrNoSVID, err)
	}
	s.trust.Store(&trustState{bundle: bundle})
	s.install(svid, s.now())
	s.log.Info("identity: obtained SVID from the Workload API", svidAttrs(svid)...)
	return nil
}

// workloadLoop follows the Workload API's stream: every SVID the agent
// pushes (a renewal) replaces the current one. The agent renews; the
// Source does not.
func (s *Source) workloadLoop(ctx context.Context) {
	w := &workloadWatcher{s: s}
	for ctx.Err() == nil {
		err := workloadapi.WatchX509Context(ctx, w, workloadapi.WithAddr(s.cfg.WorkloadAPIAddr))
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			return
		}
		s.log.Warn("identity: Workload API stream ended; reconnecting", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

type workloadWatcher struct{ s *Source }

func (w *workloadWatcher) OnX509ContextUpdate(xc *workloadapi.X509Context) {
	s := w.s
	svid := xc.DefaultSVID()
	if svid == nil || svid.ID != s.ID() {
		s.log.Warn("identity: the Workload API pushed another identity; ignored")
		return
	}
	if _, _, err := x509svid.Verify(svid.Certificates, s.trust.Load().bundle, x509svid.WithTime(s.now())); err != nil {
		s.log.Warn("identity: the Workload API pushed an SVID that does not verify; ignored", "error", err.Error())
		return
	}
	if cur := s.SVID(); cur.Certificates[0].Equal(svid.Certificates[0]) {
		return
	}
	s.install(svid, s.now())
	s.log.Info("identity: SVID renewed by the node agent", svidAttrs(svid)...)
}

func (w *workloadWatcher) OnX509ContextWatchError(err error) {
	if !errors.Is(err, context.Canceled) {
		w.s.log.Debug("identity: Workload API watch error", "error", err.Error())
	}
}
