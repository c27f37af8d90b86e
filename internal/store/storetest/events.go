package storetest

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store"
)

func testEvents(t *testing.T, st *store.Store) {
	ctx := t.Context()
	seq, err := st.LatestEventSeq(ctx)
	must(t, err)
	if seq != 0 {
		t.Errorf("LatestEventSeq on empty log = %d, want 0", seq)
	}
	evs, err := st.EventsSince(ctx, 0, 0)
	must(t, err)
	if len(evs) != 0 {
		t.Errorf("EventsSince on empty log = %v", evs)
	}

	before := time.Now().Add(-time.Second)
	appended := make([]store.Event, 0, 4)
	for i, p := range [][]byte{[]byte(`{"serials":["ab"]}`), nil, {0, 1, 0xff}, []byte(`{}`)} {
		ev, err := st.AppendEvent(ctx, fmt.Sprintf("kind-%d", i), p)
		must(t, err)
		if ev.Kind != fmt.Sprintf("kind-%d", i) || !bytes.Equal(ev.Payload, p) {
			t.Errorf("AppendEvent returned %+v", ev)
		}
		if i > 0 && ev.Seq <= appended[i-1].Seq {
			t.Errorf("seq %d after %d", ev.Seq, appended[i-1].Seq)
		}
		if ev.CreatedAt.Before(before) || ev.CreatedAt.After(time.Now().Add(time.Second)) ||
			ev.CreatedAt.Location() != time.UTC || !ev.CreatedAt.Equal(ev.CreatedAt.Truncate(time.Microsecond)) {
			t.Errorf("CreatedAt = %v, want now in UTC at µs precision", ev.CreatedAt)
		}
		appended = append(appended, ev)
	}

	same := func(t *testing.T, got, want []store.Event) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("got %d events, want %d", len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Seq != w.Seq || g.Kind != w.Kind || !bytes.Equal(g.Payload, w.Payload) || g.Payload == nil {
				t.Errorf("event %d = %+v, want %+v", i, g, w)
			}
			wantTime(t, "CreatedAt", g.CreatedAt, w.CreatedAt)
		}
	}
	tests := []struct {
		name  string
		since int64
		limit int
		want  []store.Event
	}{
		{"all", 0, 0, appended},
		{"after first", appended[0].Seq, 0, appended[1:]},
		{"limit", 0, 2, appended[:2]},
		{"after first, limit", appended[0].Seq, 1, appended[1:2]},
		{"after last", appended[3].Seq, 0, nil},
		{"negative limit is no limit", 0, -1, appended},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := st.EventsSince(ctx, tt.since, tt.limit)
			must(t, err)
			same(t, got, tt.want)
		})
	}

	seq, err = st.LatestEventSeq(ctx)
	must(t, err)
	if seq != appended[3].Seq {
		t.Errorf("LatestEventSeq = %d, want %d", seq, appended[3].Seq)
	}
}

// testEventsConcurrent appends from several goroutines while a watcher
// polls EventsSince from the last seq it saw: every seq must be unique,
// each writer's seqs must increase, and the watcher must see every event
// (an event never becomes visible before one with a smaller seq).
func testEventsConcurrent(t *testing.T, st *store.Store) {
	ctx := t.Context()
	const writers, each = 8, 25

	done := make(chan struct{})
	var seen []int64
	watcher := make(chan error, 1)
	go func() {
		var last int64
		poll := func() error {
			evs, err := st.EventsSince(ctx, last, 0)
			if err != nil {
				return err
			}
			for _, ev := range evs {
				if ev.Seq <= last {
					return fmt.Errorf("EventsSince(%d) returned seq %d", last, ev.Seq)
				}
				last = ev.Seq
				seen = append(seen, ev.Seq)
			}
			return nil
		}
		for {
			select {
			case <-done:
				watcher <- poll()
				return
			default:
			}
			if err := poll(); err != nil {
				watcher <- err
				return
			}
		}
	}()

	var wg sync.WaitGroup
	perWriter := make([][]int64, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				ev, err := st.AppendEvent(ctx, "test", fmt.Appendf(nil, `{"w":%d,"i":%d}`, w, i))
				if err != nil {
					t.Error(err)
					return
				}
				perWriter[w] = append(perWriter[w], ev.Seq)
			}
		})
	}
	wg.Wait()
	close(done)
	must(t, <-watcher)

	var all []int64
	for w, seqs := range perWriter {
		if !slices.IsSorted(seqs) {
			t.Errorf("writer %d seqs not increasing: %v", w, seqs)
		}
		all = append(all, seqs...)
	}
	slices.Sort(all)
	if len(slices.Compact(slices.Clone(all))) != writers*each {
		t.Fatalf("got %d unique seqs, want %d", len(slices.Compact(slices.Clone(all))), writers*each)
	}
	if !slices.Equal(seen, all) {
		t.Errorf("watcher saw %d events, want all %d in order (first gap or reorder breaks resumption)", len(seen), len(all))
	}
	evs, err := st.EventsSince(ctx, 0, 0)
	must(t, err)
	if len(evs) != writers*each {
		t.Fatalf("EventsSince(0) = %d events, want %d", len(evs), writers*each)
	}
	for i, ev := range evs {
		if ev.Seq != all[i] {
			t.Fatalf("EventsSince order: event %d has seq %d, want %d", i, ev.Seq, all[i])
		}
	}
	latest, err := st.LatestEventSeq(ctx)
	must(t, err)
	if latest != all[len(all)-1] {
		t.Errorf("LatestEventSeq = %d, want %d", latest, all[len(all)-1])
	}
}
