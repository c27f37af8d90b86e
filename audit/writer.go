package audit

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures NewWriter.
type Config struct {
	// Dir holds the audit files (created, mode 0700). Required.
	Dir string
	// Service names the writer: events carry it and the file is
	// <Dir>/<Service>.audit.jsonl. Required; letters, digits, . _ -.
	Service string
	// Instance, if set, is written in every event (an SVID instance ID,
	// a pod name).
	Instance string
	// MaxFileBytes rotates the file when it would grow beyond this: the
	// current file is renamed <name>.<unix nanoseconds> and a new one
	// started. 0 means 64 MiB.
	MaxFileBytes int64
	// MaxRotated is how many rotated files are kept (the oldest are
	// deleted; the agent has normally shipped them long before). 0 means 20.
	MaxRotated int
	// Buffer is how many events may wait for the disk. 0 means 8192.
	Buffer int
	// MaxWait is how long Write waits for room in a full buffer before it
	// drops the event. 0 means 5ms.
	MaxWait time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Writer appends events to a local file. It is safe for concurrent use;
// a nil *Writer discards events (FromEnv returns one when auditing is
// off).
type Writer struct {
	cfg  Config
	path string
	ch   chan Event
	done chan struct{}

	dropped  atomic.Uint64
	written  atomic.Uint64
	reported uint64 // drops already reported (writer goroutine)

	closeOnce sync.Once
	closed    atomic.Bool
	err       atomic.Pointer[error] // last write error
}

var serviceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// NewWriter opens (or creates) the service's audit file and starts the
// writing goroutine. Close it to flush.
func NewWriter(cfg Config) (*Writer, error) {
	if cfg.Dir == "" {
		return nil, errors.New("audit: Config.Dir is required")
	}
	if !serviceRE.MatchString(cfg.Service) {
		return nil, fmt.Errorf("audit: Config.Service %q must be letters, digits, . _ or -", cfg.Service)
	}
	if cfg.MaxFileBytes <= 0 {
		cfg.MaxFileBytes = 64 << 20
	}
	if cfg.MaxRotated <= 0 {
		cfg.MaxRotated = 20
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 8192
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 5 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	w := &Writer{cfg: cfg, path: filepath.Join(cfg.Dir, cfg.Service+".audit.jsonl"),
		ch: make(chan Event, cfg.Buffer), done: make(chan struct{})}
	f, size, err := w.open()
	if err != nil {
		return nil, err
	}
	go w.loop(f, size)
	return w, nil
}

// FromEnv returns a Writer for service in the directory named by
// WARD_AUDIT_DIR, or nil (a Writer that discards) when it is unset.
func FromEnv(service string) (*Writer, error) {
	dir := os.Getenv("WARD_AUDIT_DIR")
	if dir == "" {
		return nil, nil
	}
	return NewWriter(Config{Dir: dir, Service: service})
}

// Write queues e, filling V, Time (when zero), Service and Instance. It
// waits at most Config.MaxWait for room; then the event is dropped and
// counted. It never fails otherwise.
func (w *Writer) Write(e Event) {
	if w == nil {
		return
	}
	if w.closed.Load() {
		w.dropped.Add(1)
		return
	}
	e.V = SchemaVersion
	if e.Time.IsZero() {
		e.Time = w.cfg.Now()
	}
	e.Time = e.Time.UTC()
	e.Service = w.cfg.Service
	if e.Instance == "" {
		e.Instance = w.cfg.Instance
	}
	select {
	case w.ch <- e:
		return
	default:
	}
	t := time.NewTimer(w.cfg.MaxWait)
	defer t.Stop()
	select {
	case w.ch <- e:
	case <-t.C:
		w.dropped.Add(1)
	}
}

// Dropped is how many events were dropped since the start.
func (w *Writer) Dropped() uint64 {
	if w == nil {
		return 0
	}
	return w.dropped.Load()
}

// Written is how many events reached the file.
func (w *Writer) Written() uint64 {
	if w == nil {
		return 0
	}
	return w.written.Load()
}

// Path is the file being written.
func (w *Writer) Path() string {
	if w == nil {
		return ""
	}
	return w.path
}

// Err is the last error writing the file, if any (events then count as
// dropped).
func (w *Writer) Err() error {
	if w == nil {
		return nil
	}
	if p := w.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Close writes what is queued and closes the file.
func (w *Writer) Close() error {
	if w == nil {
		return nil
	}
	w.closeOnce.Do(func() {
		w.closed.Store(true)
		close(w.ch)
	})
	<-w.done
	return w.Err()
}

func (w *Writer) open() (*os.File, int64, error) {
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("audit: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("audit: %w", err)
	}
	return f, st.Size(), nil
}

func (w *Writer) fail(err error) {
	w.err.Store(&err)
}

// loop writes queued events, batching the buffered ones into one write,
// and rotates the file by size.
func (w *Writer) loop(f *os.File, size int64) {
	defer close(w.done)
	bw := bufio.NewWriterSize(f, 64<<10)
	flush := func() {
		if err := bw.Flush(); err != nil {
			w.fail(err)
		}
	}
	defer func() {
		flush()
		_ = f.Close()
	}()
	write := func(e Event) {
		line, err := json.Marshal(e)
		if err != nil || len(line) > MaxLineSize {
			w.dropped.Add(1)
			return
		}
		line = append(line, '\n')
		if size+int64(len(line)) > w.cfg.MaxFileBytes && size > 0 {
			flush()
			nf, nsize, err := w.rotate(f)
			if err != nil {
				w.fail(err)
			}
			if nf == nil { // the file could not be reopened: nothing can be written
				w.dropped.Add(1)
				return
			}
			f, size = nf, nsize
			bw.Reset(f)
		}
		if _, err := bw.Write(line); err != nil {
			w.fail(err)
			w.dropped.Add(1)
			return
		}
		size += int64(len(line))
		w.written.Add(1)
	}
	for e := range w.ch {
		write(e)
		// Drain what is queued, then flush once.
	drain:
		for {
			select {
			case e, ok := <-w.ch:
				if !ok {
					break drain
				}
				write(e)
			default:
				break drain
			}
		}
		if d := w.dropped.Load(); d > w.reported {
			write(Event{V: SchemaVersion, Time: w.cfg.Now().UTC(), Service: w.cfg.Service, Instance: w.cfg.Instance,
				Kind: KindDropped, Extra: map[string]any{"dropped": d - w.reported, "dropped_total": d}})
			w.reported = d
		}
		flush()
	}
}

// rotate renames the current file aside and opens a new one, keeping
// at most MaxRotated rotated files.
// On a failed rename it goes on appending to the same file.
func (w *Writer) rotate(f *os.File) (*os.File, int64, error) {
	_ = f.Close()
	aside := w.path + "." + strconv.FormatInt(w.cfg.Now().UnixNano(), 10)
	rerr := os.Rename(w.path, aside)
	if rerr == nil {
		old, _ := filepath.Glob(w.path + ".*")
		if n := len(old) - w.cfg.MaxRotated; n > 0 {
			suffix := func(p string) int64 {
				n, _ := strconv.ParseInt(strings.TrimPrefix(filepath.Ext(p), "."), 10, 64)
				return n
			}
			slices.SortFunc(old, func(a, b string) int { return cmp.Compare(suffix(a), suffix(b)) })
			for _, p := range old[:n] {
				_ = os.Remove(p)
			}
		}
	} else {
		rerr = fmt.Errorf("audit: rotate: %w", rerr)
	}
	nf, size, err := w.open()
	if err != nil {
		return nil, 0, err
	}
	return nf, size, rerr
}
