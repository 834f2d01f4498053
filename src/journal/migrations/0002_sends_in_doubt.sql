-- Set while a request that would create a video (a first chunk, or a whole
-- file in one request) may be on its way; cleared when its outcome is known.
ALTER TABLE files ADD COLUMN creating INTEGER NOT NULL DEFAULT 0;
-- Such requests whose outcome was never known (the reply was lost, or
-- ingestd died before it arrived): each may have left one extra video on
-- api.video, unfinished (a first chunk) or a duplicate (a whole file).
ALTER TABLE files ADD COLUMN sends_in_doubt INTEGER NOT NULL DEFAULT 0;
