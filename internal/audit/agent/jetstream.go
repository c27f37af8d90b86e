package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// Wire batching: events travel many to a NATS message, each with its own
// de-duplication ID, so the broker and the collector handle one message
// per batch instead of one per event. The collector stores and
// de-duplicates events by their own IDs.
const (
	// BatchHeader marks a batched message: its data is lines
	// "<event id> <event JSON>\n".
	BatchHeader = "Ward-Audit-Batch"
	// maxWireEvents and maxWireBytes bound one batched message (the
	// broker's default max_payload is 1 MiB).
	maxWireEvents = 512
	maxWireBytes  = 512 << 10
)

// PublishBatch implements Publisher: msgs go out packed into batched
// messages (whose Nats-Msg-Id is derived from the event IDs they carry),
// and it returns once the broker acknowledged every one.
func (p *JetStream) PublishBatch(ctx context.Context, msgs []Msg) error {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var futures []jetstream.PubAckFuture
	for len(msgs) > 0 {
		n, size := 0, 0
		for n < len(msgs) && n < maxWireEvents && (n == 0 || size+len(msgs[n].ID)+len(msgs[n].Data)+2 <= maxWireBytes) {
			size += len(msgs[n].ID) + len(msgs[n].Data) + 2
			n++
		}
		nm, id := pack(msgs[:n], size)
		msgs = msgs[n:]
		f, err := p.JS.PublishMsgAsync(nm, jetstream.WithMsgID(id))
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

// pack builds one batched message of msgs (all to the same subject) and
// its de-duplication ID: a hash of the event IDs it carries, so the same
// events republished in the same batch are dropped by the broker.
func pack(msgs []Msg, size int) (*nats.Msg, string) {
	data := make([]byte, 0, size)
	h := sha256.New()
	for _, m := range msgs {
		data = append(data, m.ID...)
		data = append(data, ' ')
		data = append(data, m.Data...)
		data = append(data, '\n')
		h.Write([]byte(m.ID))
		h.Write([]byte{0})
	}
	nm := &nats.Msg{Subject: msgs[0].Subject, Data: data, Header: nats.Header{}}
	nm.Header.Set(BatchHeader, "1")
	return nm, "b-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// Unpack splits a message's data into (event ID, event) pairs: a batched
// message (BatchHeader "1") holds many, anything else is one event with
// the message's own ID. A malformed batch line is returned with an empty
// event ID (the caller derives one) and the line as the event.
func Unpack(batched bool, msgID string, data []byte, fn func(id string, event []byte)) {
	if !batched {
		fn(msgID, data)
		return
	}
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) == 0 {
			continue
		}
		id, ev, ok := bytes.Cut(line, []byte{' '})
		if !ok || len(id) == 0 || len(id) > 64 {
			fn("", line)
			continue
		}
		fn(string(id), ev)
	}
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
