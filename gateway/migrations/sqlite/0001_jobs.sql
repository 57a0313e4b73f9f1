-- The job queue (gateway/src/jobs/). Times are unix milliseconds.
CREATE TABLE jobs (
    -- The submit order (lists, newest first); AUTOINCREMENT never gives a number twice.
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The queue order: taken at submit, and again when a job goes back to the queue, so a job
    -- taken back after a crash queues behind the others and no waiting job's position grows.
    ticket           INTEGER NOT NULL,
    id               TEXT    NOT NULL UNIQUE,
    -- The hex SHA-256 of the submitting API key; '' without keys.
    owner            TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    model            TEXT    NOT NULL,
    request          BLOB    NOT NULL,
    headers          TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    completed_at     INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- The token of the worker holding the lease, and until when.
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    processing_ms    INTEGER,
    result           BLOB,
    error_code       TEXT,
    error_message    TEXT
);
-- A queue position is a count over this index: the queued jobs at or before a job's ticket.
CREATE INDEX jobs_queued ON jobs (ticket) WHERE status = 'queued';
-- The next ticket is MAX(ticket) + 1 (one writer: no two submits take the same one).
CREATE INDEX jobs_ticket ON jobs (ticket);
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'in_progress';
CREATE INDEX jobs_owner ON jobs (owner, seq);
CREATE INDEX jobs_status ON jobs (status);
CREATE INDEX jobs_finished ON jobs (completed_at) WHERE completed_at IS NOT NULL;
