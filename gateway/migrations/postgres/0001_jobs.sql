-- The job queue (gateway/src/jobs/). Times are unix milliseconds.
-- Tickets: shared by every instance, never given twice.
CREATE SEQUENCE jobs_ticket;
CREATE TABLE jobs (
    -- The submit order (lists, newest first); an identity never gives a number twice.
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The queue order: taken at submit, and again when a job goes back to the queue, so a job
    -- taken back after a crash queues behind the others and no waiting job's position grows.
    ticket           BIGINT  NOT NULL,
    id               TEXT    NOT NULL UNIQUE,
    -- The hex SHA-256 of the submitting API key; '' without keys.
    owner            TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    model            TEXT    NOT NULL,
    request          BYTEA   NOT NULL,
    headers          TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    started_at       BIGINT,
    completed_at     BIGINT,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    -- The token of the worker holding the lease, and until when.
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    processing_ms    BIGINT,
    result           BYTEA,
    error_code       TEXT,
    error_message    TEXT
);
-- A queue position is a count over this index: the queued jobs at or before a job's ticket.
CREATE INDEX jobs_queued ON jobs (ticket) WHERE status = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'in_progress';
CREATE INDEX jobs_owner ON jobs (owner, seq);
CREATE INDEX jobs_status ON jobs (status);
CREATE INDEX jobs_finished ON jobs (completed_at) WHERE completed_at IS NOT NULL;
