package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream is the JetStream stream of the audit trail.
const (
	Stream          = "WARD_AUDIT"
	StreamSubjects  = "ward.v1.audit.>"
	DuplicateWindow = 10 * time.Minute
)

// EnsureStream creates or updates the audit stream: file storage,
// de-duplication by message ID over DuplicateWindow.
func EnsureStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       Stream,
		Subjects:   []string{StreamSubjects},
		Storage:    jetstream.FileStorage,
		Duplicates: DuplicateWindow,
		MaxAge:     7 * 24 * time.Hour, // the collector stores events long before
		Discard:    jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: audit stream: %w", err)
	}
	return s, nil
}

// JetStream publishes to the audit stream and waits for every ack.
type JetStream struct {
	JS      jetstream.JetStream
	Timeout time.Duration // per batch; default 10s
}

// PublishBatch implements Publisher.
func (p *JetStream) PublishBatch(ctx context.Context, msgs []Msg) error {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		nm := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{}}
		f, err := p.JS.PublishMsgAsync(nm, jetstream.WithMsgID(m.ID))
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	var firstErr error
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = err
			}
		case <-ctx.Done():
			return fmt.Errorf("waiting for acknowledgements: %w", ctx.Err())
		}
	}
	return firstErr
}

// Publish implements Publisher (heartbeats).
func (p *JetStream) Publish(ctx context.Context, subject string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := p.JS.Publish(ctx, subject, data)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return err
}
