-- The SHA-256 of a file's whole content (lowercase hex), computed while it
-- is uploaded and stored when it is done. NULL until then, and for rows
-- done by an older ingestd.
ALTER TABLE files ADD COLUMN sha256 TEXT;
