-- One row per file identity: watch root + relative path + size + mtime + inode/dev.
-- A new file copied over an old name is a new row.
CREATE TABLE files (
    id              INTEGER PRIMARY KEY,
    -- Paths are stored as raw bytes so names that are not UTF-8 survive.
    root            BLOB    NOT NULL,
    rel_path        BLOB    NOT NULL,
    size            INTEGER NOT NULL CHECK (size >= 0),
    mtime_ns        INTEGER NOT NULL,
    dev             INTEGER NOT NULL,
    inode           INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN
                        ('settling', 'queued', 'uploading', 'retrying', 'done', 'failed', 'gone')),
    -- Fixed when the first chunk is sent: a resumed upload keeps its plan even
    -- if api.chunk_size changed since.
    chunk_size      INTEGER,
    -- Bytes acknowledged by the server; committed before the next chunk is sent.
    bytes_uploaded  INTEGER NOT NULL DEFAULT 0,
    video_id        TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Unix milliseconds; backoff survives restarts.
    next_attempt_at INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    -- When the current upload attempt started, for the rate shown by status.
    started_at      INTEGER,
    done_at         INTEGER,
    -- The Video object of the completing reply (JSON), when the server sent one.
    video_json      TEXT,
    UNIQUE (root, rel_path, size, mtime_ns, dev, inode)
);

CREATE INDEX files_by_state ON files (state, next_attempt_at, id);
