-- Fair delivery across merchants: each task carries the merchant host its notifyUrl names, so
-- a claim can take a bounded share per host (one merchant's backlog cannot fill it) and a
-- host's due tasks can be postponed together (its breaker) in one statement.

-- host:port as the per-host bounds count it: lower-case host (IPv6 in brackets), the port
-- or the scheme's default. '' for what is not an absolute URL (it fails at once anyway).
CREATE FUNCTION notify_host(url text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(lower(m[2]) || ':' || coalesce(nullif(m[3], ''),
                    CASE lower(m[1]) WHEN 'https' THEN '443' ELSE '80' END), '')
    FROM (SELECT regexp_match(url, '^([A-Za-z][A-Za-z0-9+.-]*)://(?:[^/?#]*@)?'
                                   '(\[[^]/?#]*\]|[^:/?#]*)(?::([^/?#]*))?') AS m) AS parsed
$$;

-- Generated, so every writer of notify_task (the settlement, tests, benchmarks) gets it.
-- Adding it rewrites the table once.
ALTER TABLE notify_task
    ADD COLUMN host text GENERATED ALWAYS AS (coalesce(notify_host(notify_url), '')) STORED;

-- Open tasks by host, each host's in due order: the claim walks the hosts (a skip scan) and
-- takes each one's oldest due tasks; the breaker postpones one host's. It replaces the
-- index on due time alone, which only the old first-due-first claim used.
CREATE INDEX notify_task_host_due_idx ON notify_task (host, next_attempt_at)
    WHERE notify_status IN (0, 2);
DROP INDEX notify_task_due_idx;
