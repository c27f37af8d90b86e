package workloadapi

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	workload "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// JWTIssuer supplies JWT-SVIDs and the trust domain's JWT bundle (JWKS).
type JWTIssuer interface {
	JWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (string, error)
	JWTBundle(ctx context.Context) ([]byte, error)
}

// FetchJWTSVID returns JWT-SVIDs for the requested audience: of every
// identity the caller is entitled to, or of the one it names.
func (s *Server) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	if s.cfg.JWT == nil {
		return nil, status.Error(codes.Unimplemented, "JWT-SVIDs are not served")
	}
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var want spiffeid.ID
	if req.SpiffeId != "" {
		if want, err = spiffeid.FromString(req.SpiffeId); err != nil {
			return nil, status.Error(codes.InvalidArgument, "spiffe_id is not a SPIFFE ID")
		}
	}
	resp := &workload.JWTSVIDResponse{}
	seen := map[spiffeid.ID]bool{}
	for _, e := range s.cfg.Entries() {
		if !e.Matches(c) || seen[e.ID] || (!want.IsZero() && e.ID != want) {
			continue
		}
		seen[e.ID] = true
		tok, err := s.cfg.JWT.JWTSVID(ctx, e.ID, req.Audience)
		if err != nil {
			s.log.Warn("workloadapi: no JWT-SVID for an entry", "spiffe_id", e.ID.String(), "error", err)
			return nil, status.Error(codes.Unavailable, "the JWT-SVID could not be obtained; retry")
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: e.ID.String(), Svid: tok})
	}
	if len(resp.Svids) == 0 {
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	return resp, nil
}

// FetchJWTBundles streams the JWT bundle: at once, then on every change.
func (s *Server) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	ctx := stream.Context()
	if err := checkHeader(ctx); err != nil {
		return err
	}
	if s.cfg.JWT == nil {
		return status.Error(codes.Unimplemented, "JWT-SVIDs are not served")
	}
	td := s.cfg.Bundle().TrustDomain()
	for {
		wake := s.changes()
		jwks, err := s.cfg.JWT.JWTBundle(ctx)
		if err != nil {
			return status.Error(codes.Unavailable, "the JWT bundle could not be obtained; retry")
		}
		if err := stream.Send(&workload.JWTBundlesResponse{Bundles: map[string][]byte{td.IDString(): jwks}}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
	}
}

// ValidateJWTSVID validates a JWT-SVID for an audience with the trust
// domain's JWT bundle.
func (s *Server) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	if s.cfg.JWT == nil {
		return nil, status.Error(codes.Unimplemented, "JWT-SVIDs are not served")
	}
	if req.Audience == "" || req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "audience and svid must be specified")
	}
	td := s.cfg.Bundle().TrustDomain()
	jwks, err := s.cfg.JWT.JWTBundle(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "the JWT bundle could not be obtained; retry")
	}
	b, err := jwtbundle.Parse(td, jwks)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "the JWT bundle is not valid")
	}
	svid, err := jwtsvid.ParseAndValidate(req.Svid, b, []string{req.Audience})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Error(codes.Internal, "claims could not be encoded")
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}
