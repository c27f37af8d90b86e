-- Bootstrap tokens may carry an expiry (NULL: valid until revoked).
ALTER TABLE bootstrap_tokens ADD COLUMN expires_at INTEGER;
