-- The workflow around an upload.
--
-- The queue's order: each queued file's rank (0 = a folder's first
-- `priority` pattern, … ; files matching none come after every match) and
-- its key within the rank (the folder's `order`: mtime, -mtime, size or
-- -size), both set when the file is queued. A claim takes the lowest
-- (rank, key, id).
ALTER TABLE files ADD COLUMN queue_rank INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN queue_key INTEGER NOT NULL DEFAULT 0;
CREATE INDEX files_by_queue ON files (state, queue_rank, queue_key, id)
    WHERE next_attempt_at IS NULL;

-- "Playable": when the video's HLS manifest first answered 200 (Unix ms);
-- when to look again (NULL: not watched, because it is playable, was never
-- to be watched or gave up); why it is not watched or gave up.
ALTER TABLE files ADD COLUMN playable_at INTEGER;
ALTER TABLE files ADD COLUMN playable_poll_at INTEGER;
ALTER TABLE files ADD COLUMN playable_note TEXT;
CREATE INDEX files_by_playable_poll ON files (playable_poll_at)
    WHERE playable_poll_at IS NOT NULL;

-- The outbox: every event of a file (uploaded, playable, not_playable,
-- failed, gone), written in the transaction of the change that causes it,
-- with the JSON the hooks receive frozen at that moment. `uid` is what a
-- receiver dedupes on.
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY,
    uid      TEXT    NOT NULL UNIQUE,
    file_id  INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    body     TEXT    NOT NULL,
    at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_file ON events (file_id, id);

-- One delivery of an event to one hook (named by its key), retried with
-- persisted backoff. A delivery on its way is claimed: by which process
-- (a node's name, or the SQLite journal's one daemon) and until when (past
-- the hook's timeout); a claim that ran out is free again.
CREATE TABLE IF NOT EXISTS deliveries (
    event_id        INTEGER NOT NULL REFERENCES events (id),
    hook            TEXT    NOT NULL,
    file_id         INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'dropped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    claimed_by      TEXT,
    claimed_until   INTEGER,
    delivered_at    INTEGER,
    PRIMARY KEY (event_id, hook)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_in_order ON deliveries (hook, file_id, event_id) WHERE state = 'pending';
