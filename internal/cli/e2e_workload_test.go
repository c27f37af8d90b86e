package cli

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/wardsec/ward/identity"
)

// TestWorkloadAPIEndToEnd: go-spiffe's workloadapi client gets an SVID
// from ward dev's node agent, unchanged, for a registration entry that
// matches this process's uid, and sees its renewal pushed on the stream.
func TestWorkloadAPIEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := startDev(t, t.TempDir(), "--vault=false")
	sock := d.vars["SPIFFE_ENDPOINT_SOCKET"]
	if !strings.HasPrefix(sock, "unix://") {
		t.Fatalf("dev.env SPIFFE_ENDPOINT_SOCKET = %q", sock)
	}
	d.mustWard("team", "create", "wl")
	d.mustWard("service", "create", "orders", "--team", "wl", "--level", "L1", "--svid-ttl", "4s")
	var entry struct {
		ID       string `json:"id"`
		SPIFFEID string `json:"spiffe_id"`
	}
	if err := json.Unmarshal([]byte(d.mustWard("agent", "entry", "create", "--service", "orders", "--uid", strconv.Itoa(os.Getuid()), "-o", "json")), &entry); err != nil {
		t.Fatal(err)
	}
	if entry.SPIFFEID != "spiffe://ward.test/svc/orders" {
		t.Fatalf("entry %+v", entry)
	}
	if out := d.mustWard("agent", "entry", "list"); !strings.Contains(out, entry.ID) {
		t.Fatalf("entry list:\n%s", out)
	}
	if _, err := d.ward("agent", "entry", "create", "--service", "orders"); err == nil {
		t.Fatal("an entry without a selector was accepted")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(sock)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil || svid.ID.String() != "spiffe://ward.test/svc/orders" {
		t.Fatalf("svid %v %v", svid, err)
	}
	first := svid.Certificates[0].SerialNumber.String()
	// The agent renews at half life (2 s) and pushes the new SVID.
	waitFor(t, 15*time.Second, "a renewed SVID pushed on the stream", func() bool {
		s, err := src.GetX509SVID()
		return err == nil && s.Certificates[0].SerialNumber.String() != first
	})

	// JWT-SVIDs: fetched, validated through the agent, and against the
	// bundle the agent streams.
	jsvid, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "billing-api"}, workloadapi.WithAddr(sock))
	if err != nil || jsvid.ID.String() != "spiffe://ward.test/svc/orders" || jsvid.Audience[0] != "billing-api" {
		t.Fatalf("JWT-SVID %+v %v", jsvid, err)
	}
	tok := jsvid.Marshal()
	if v, err := workloadapi.ValidateJWTSVID(ctx, tok, "billing-api", workloadapi.WithAddr(sock)); err != nil || v.ID != jsvid.ID {
		t.Fatalf("validate: %+v %v", v, err)
	}
	if _, err := workloadapi.ValidateJWTSVID(ctx, tok, "another-api", workloadapi.WithAddr(sock)); err == nil {
		t.Fatal("a JWT-SVID validated for another audience")
	}
	bundles, err := workloadapi.FetchJWTBundles(ctx, workloadapi.WithAddr(sock))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(tok, bundles, []string{"billing-api"}); err != nil {
		t.Fatalf("offline validation with the streamed bundle: %v", err)
	}

	// The SDK's identity package, on the Workload API instead of a
	// bootstrap token: it follows the agent's renewals.
	isrc, err := identity.New(ctx, identity.Config{AuthorityURL: d.vars["WARD_AUTHORITY"], WorkloadAPIAddr: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer isrc.Close()
	go func() { _ = isrc.Run(ctx) }()
	if isrc.ID().String() != "spiffe://ward.test/svc/orders" {
		t.Fatalf("identity %s", isrc.ID())
	}
	was := isrc.SVID().Certificates[0].SerialNumber.String()
	waitFor(t, 15*time.Second, "the identity Source follows the agent's renewal", func() bool {
		return isrc.SVID().Certificates[0].SerialNumber.String() != was
	})
	d.mustWard("agent", "entry", "delete", entry.ID)
}
