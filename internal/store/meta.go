package store

import (
	"context"
	"fmt"
)

// PutMeta stores value under key, replacing any previous value.
func (s *Store) PutMeta(ctx context.Context, key string, value []byte) error {
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`), key, nonNil(value))
	return wrap(err, "put meta", fmt.Sprintf("meta %q", key))
}

// GetMeta returns the value stored under key, or ErrNotFound.
func (s *Store) GetMeta(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT value FROM meta WHERE key = ?`), key).Scan(&v)
	if err != nil {
		return nil, wrap(err, "get meta", fmt.Sprintf("meta %q", key))
	}
	return nonNil(v), nil
}
