-- A file's identity is its watch root, relative path, size, mtime and a
-- content sample (a hash of its size, first and last MiB). Device, inode and
-- ctime become hints: they change when a share is remounted or restored, so
-- they can no longer be part of a unique key. SQLite cannot drop a UNIQUE
-- constraint, so the table is rebuilt with every row kept.
CREATE TABLE files_v3 (
    id              INTEGER PRIMARY KEY,
    root            BLOB    NOT NULL,
    rel_path        BLOB    NOT NULL,
    size            INTEGER NOT NULL CHECK (size >= 0),
    mtime_ns        INTEGER NOT NULL,
    -- Hints: the same device, inode and ctime mean certainly the same file;
    -- others are checked against the sample.
    dev             INTEGER NOT NULL,
    inode           INTEGER NOT NULL,
    ctime_ns        INTEGER,
    -- Taken when the file settles; NULL while settling and for rows written
    -- by an older ingestd (taken from the file the first time it is needed).
    sample          BLOB,
    state           TEXT    NOT NULL CHECK (state IN
                        ('settling', 'queued', 'uploading', 'retrying', 'done', 'failed', 'gone')),
    chunk_size      INTEGER,
    bytes_uploaded  INTEGER NOT NULL DEFAULT 0,
    video_id        TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    started_at      INTEGER,
    done_at         INTEGER,
    video_json      TEXT,
    creating        INTEGER NOT NULL DEFAULT 0,
    sends_in_doubt  INTEGER NOT NULL DEFAULT 0
);

INSERT INTO files_v3 (id, root, rel_path, size, mtime_ns, dev, inode, ctime_ns, sample, state,
    chunk_size, bytes_uploaded, video_id, attempts, next_attempt_at, last_error, created_at,
    updated_at, started_at, done_at, video_json, creating, sends_in_doubt)
SELECT id, root, rel_path, size, mtime_ns, dev, inode, NULL, NULL, state,
    chunk_size, bytes_uploaded, video_id, attempts, next_attempt_at, last_error, created_at,
    updated_at, started_at, done_at, video_json, creating, sends_in_doubt
FROM files;

DROP TABLE files;
ALTER TABLE files_v3 RENAME TO files;

CREATE INDEX files_by_state ON files (state, next_attempt_at, id);
-- What the journal knows at a path (scans, event hints).
CREATE INDEX files_by_path ON files (root, rel_path);
-- A settled file that is one already journaled (moved, restored).
CREATE INDEX files_by_sample ON files (sample) WHERE sample IS NOT NULL;

-- Videos ingestd started on api.video and then abandoned (the file vanished
-- or changed mid-upload, or the request creating the video lost its reply):
-- for an operator to delete in the dashboard (`ingestd status --orphans`).
CREATE TABLE IF NOT EXISTS orphans (
    id        INTEGER PRIMARY KEY,
    file_id   INTEGER NOT NULL,
    root      BLOB    NOT NULL,
    rel_path  BLOB    NOT NULL,
    -- NULL when the reply that would have named it was lost.
    video_id  TEXT,
    at        INTEGER NOT NULL,
    why       TEXT    NOT NULL
);

-- Each watch root's own identity, as last seen available: a root that was a
-- mount point and is not one now is a share that is away, even right after
-- a restart.
CREATE TABLE IF NOT EXISTS roots (
    root        BLOB    PRIMARY KEY,
    dev         INTEGER NOT NULL,
    inode       INTEGER NOT NULL,
    mount_point INTEGER NOT NULL,
    seen_at     INTEGER NOT NULL
);
