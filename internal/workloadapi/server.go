// Package workloadapi is the server side of the SPIFFE Workload API
// (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Workload_Endpoint.md
// and SPIFFE_Workload_API.md) that ward's node agent serves on a Unix
// socket: a workload asks for its X.509-SVID and trust bundle without any
// credential; the agent tells who it is from the kernel (the peer's uid,
// gid and pid, and the pid's executable) and the registration entries.
//
// FetchX509SVID, FetchX509Bundles and FetchJWTBundles are streams that
// send the full state at once and again on every change; FetchJWTSVID and
// ValidateJWTSVID are unary. Every call needs the spec's security header.
package workloadapi

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workload "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Caller is a workload process as the kernel describes it.
type Caller struct {
	PID, UID, GID int
	// Path is the process's executable ("" when it cannot be read).
	Path string
}

// Entry is a registration entry: callers that match every set selector
// get the SVID of ID.
type Entry struct {
	ID   spiffeid.ID
	UID  *int   // the caller's user ID
	GID  *int   // the caller's group ID
	Path string // the caller's executable
}

// Matches reports whether c satisfies every selector of e; an entry with
// no selector matches nothing.
func (e Entry) Matches(c Caller) bool {
	if e.UID == nil && e.GID == nil && e.Path == "" {
		return false
	}
	return (e.UID == nil || *e.UID == c.UID) && (e.GID == nil || *e.GID == c.GID) && (e.Path == "" || e.Path == c.Path)
}

// Issuer supplies the current SVID (with its private key) of a SPIFFE ID,
// kept fresh by the agent.
type Issuer interface {
	SVID(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error)
}

// Config configures New.
type Config struct {
	// Entries returns the current registration entries.
	Entries func() []Entry
	// Issuer supplies SVIDs for entries' IDs.
	Issuer Issuer
	// Bundle returns the current trust bundle.
	Bundle func() *x509bundle.Bundle
	// JWT, if set, serves JWT-SVIDs and the JWT bundle; nil answers
	// Unimplemented.
	JWT    JWTIssuer
	Logger *slog.Logger
}

// Server is the Workload API. Call Notify when SVIDs, the bundle or the
// entries change: every stream sends its full state again.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	changed chan struct{} // closed and replaced by Notify
}

// New checks cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Entries == nil || cfg.Issuer == nil || cfg.Bundle == nil {
		return nil, errors.New("workloadapi: Entries, Issuer and Bundle are required")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, changed: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Notify wakes every stream to send its state again.
func (s *Server) Notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Serve serves the API on a Unix socket listener until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	g := grpc.NewServer(grpc.Creds(peerCreds{}), grpc.MaxRecvMsgSize(64<<10))
	workload.RegisterSpiffeWorkloadAPIServer(g, s)
	go func() {
		<-ctx.Done()
		g.Stop()
	}()
	err := g.Serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// checkHeader enforces the Workload Endpoint spec's security header.
func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// caller returns the kernel's description of the peer.
func caller(ctx context.Context) (Caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Caller{}, status.Error(codes.Internal, "no peer")
	}
	info, ok := p.AuthInfo.(authInfo)
	if !ok {
		return Caller{}, status.Error(codes.PermissionDenied, "the caller's process could not be identified")
	}
	return info.c, nil
}

// FetchX509SVID streams the caller's SVIDs: at once, then on every change.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	ctx := stream.Context()
	if err := checkHeader(ctx); err != nil {
		return err
	}
	c, err := caller(ctx)
	if err != nil {
		return err
	}
	for {
		wake := s.changes()
		resp, err := s.x509Response(ctx, c)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
	}
}

func (s *Server) x509Response(ctx context.Context, c Caller) (*workload.X509SVIDResponse, error) {
	bundle := s.cfg.Bundle()
	bundleDER := concatDER(bundle.X509Authorities())
	resp := &workload.X509SVIDResponse{}
	seen := map[spiffeid.ID]bool{}
	for _, e := range s.cfg.Entries() {
		if !e.Matches(c) || seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		svid, err := s.cfg.Issuer.SVID(ctx, e.ID)
		if err != nil {
			s.log.Warn("workloadapi: no SVID for an entry", "spiffe_id", e.ID.String(), "error", err)
			return nil, status.Error(codes.Unavailable, "the SVID could not be obtained; retry")
		}
		certs, key, err := svid.MarshalRaw()
		if err != nil {
			return nil, status.Error(codes.Internal, "the SVID could not be encoded")
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{SpiffeId: e.ID.String(), X509Svid: certs, X509SvidKey: key, Bundle: bundleDER})
	}
	if len(resp.Svids) == 0 {
		s.log.Info("workloadapi: no registration entry matches the caller", "pid", c.PID, "uid", c.UID, "gid", c.GID, "path", c.Path)
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	return resp, nil
}

// FetchX509Bundles streams the trust bundle: at once, then on every
// change.
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	ctx := stream.Context()
	if err := checkHeader(ctx); err != nil {
		return err
	}
	for {
		wake := s.changes()
		b := s.cfg.Bundle()
		if err := stream.Send(&workload.X509BundlesResponse{Bundles: map[string][]byte{
			b.TrustDomain().IDString(): concatDER(b.X509Authorities())}}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
	}
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

// peerCreds is a gRPC transport credential for Unix sockets: no
// encryption (the socket is local), and the peer's kernel credentials
// (SO_PEERCRED) as its AuthInfo.
type peerCreds struct{}

type authInfo struct{ c Caller }

func (authInfo) AuthType() string { return "ward-peercred" }

func (peerCreds) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, authInfo{}, nil
}

func (peerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return conn, nil, errors.New("workloadapi: not a Unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return conn, nil, err
	}
	var cred *syscall.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return conn, nil, err
	}
	if serr != nil {
		return conn, nil, fmt.Errorf("workloadapi: peer credentials: %w", serr)
	}
	c := Caller{PID: int(cred.Pid), UID: int(cred.Uid), GID: int(cred.Gid)}
	if p, err := os.Readlink("/proc/" + strconv.Itoa(c.PID) + "/exe"); err == nil {
		c.Path = p
	}
	return conn, authInfo{c: c}, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "ward-peercred"}
}
func (p peerCreds) Clone() credentials.TransportCredentials { return p }
func (peerCreds) OverrideServerName(string) error           { return nil }
