//! The schema and its migrations, and opening a database (created private).

use super::*;

/// The migrations, in order: each is SQL text applied once (the database
/// records how far it got). Never edit one that has shipped; add another.
pub(super) fn migrations() -> Migrations<'static> {
    Migrations::new(
        [
            M1_HISTORY,
            M2_BOUNCES,
            M3_ANOMALY_SCOPES,
            M4_ALERTS,
            M5_AUTO_WATCH,
            M6_DELIVERED,
            M7_ANOMALY_LAST_BOUNCE,
            M8_HELD_RUNS,
            M9_FEED_CURSORS,
            M10_SHARED_DIAGNOSTICS,
            M11_RUN_IDENTITY,
            M12_FORWARDING,
            M13_UNDO,
            M14_WITHDRAWN,
        ]
        .into_iter()
        .map(M::up)
        .collect(),
    )
}

const M1_HISTORY: &str = r#"
        CREATE TABLE domains (
            id          INTEGER PRIMARY KEY,
            name        TEXT NOT NULL UNIQUE,
            -- the detector's memory (detect::DomainState), opaque to SQL
            state       TEXT
        );
        CREATE TABLE runs (
            id          INTEGER PRIMARY KEY,
            domain_id   INTEGER NOT NULL REFERENCES domains(id),
            upstream    TEXT NOT NULL,          -- label, or '*' for the consensus
            outcome     TEXT NOT NULL,
            mx          TEXT NOT NULL,          -- '10 a.example,20 b.example'
            ttl         INTEGER,
            implicit_mx INTEGER NOT NULL DEFAULT 0,
            detail      TEXT,
            first_seen  INTEGER NOT NULL,       -- unix milliseconds, UTC
            last_seen   INTEGER NOT NULL,
            checks      INTEGER NOT NULL
        );
        CREATE INDEX runs_by_domain ON runs(domain_id, upstream, first_seen);
        CREATE TABLE changes (
            id          INTEGER PRIMARY KEY,
            domain_id   INTEGER NOT NULL REFERENCES domains(id),
            at          INTEGER NOT NULL,
            kind        TEXT NOT NULL,
            severity    TEXT NOT NULL,
            before      TEXT,
            after       TEXT,
            detail      TEXT NOT NULL
        );
        CREATE INDEX changes_by_time ON changes(at);
        CREATE INDEX changes_by_domain ON changes(domain_id, at);
        CREATE TABLE windows (
            id           INTEGER PRIMARY KEY,
            domain_id    INTEGER REFERENCES domains(id),   -- NULL: global
            kind         TEXT NOT NULL,                    -- mx_change | resolver_outage
            start        INTEGER NOT NULL,
            detected_at  INTEGER NOT NULL,
            end          INTEGER,
            status       TEXT NOT NULL,
            close_reason TEXT,
            severity     TEXT NOT NULL,
            before       TEXT,
            after        TEXT,
            flaps        INTEGER NOT NULL DEFAULT 0,
            UNIQUE (domain_id, kind, start)
        );
        CREATE INDEX windows_by_status ON windows(status);
        CREATE TABLE outbox (
            id          INTEGER PRIMARY KEY,
            created_at  INTEGER NOT NULL,
            event       TEXT NOT NULL,   -- window_opened | window_closed | resolver_outage_started | ...
            domain_id   INTEGER REFERENCES domains(id),
            window_id   INTEGER REFERENCES windows(id),
            summary     TEXT NOT NULL
        );
        "#;

const M2_BOUNCES: &str = r#"
        CREATE TABLE bounces (
            id            INTEGER PRIMARY KEY,
            recipient     TEXT NOT NULL,
            domain        TEXT NOT NULL,
            at            INTEGER,              -- unix milliseconds, UTC
            action        TEXT,
            status        TEXT,
            reply_code    INTEGER,
            diagnostic    TEXT,
            remote_mta    TEXT,
            reporting_mta TEXT,
            kind          TEXT NOT NULL,
            hard          INTEGER NOT NULL,
            source        TEXT NOT NULL,
            message_id    TEXT,
            ingested_at   INTEGER NOT NULL
        );
        -- The same bounce ingested twice is stored once.
        CREATE UNIQUE INDEX bounces_identity ON bounces(
            source, recipient, coalesce(at, -1), coalesce(status, ''), coalesce(reply_code, 0),
            coalesce(action, ''), coalesce(message_id, ''), coalesce(diagnostic, ''));
        CREATE INDEX bounces_by_domain ON bounces(domain, at);
        CREATE INDEX bounces_by_time ON bounces(at);
        "#;

const M3_ANOMALY_SCOPES: &str = r#"
        -- Anomaly windows have no domain row: they cover a scope, a domain
        -- (watched or not) or a provider.
        ALTER TABLE windows ADD COLUMN scope_kind TEXT;   -- 'domain' | 'provider'
        ALTER TABLE windows ADD COLUMN scope TEXT;
        ALTER TABLE windows ADD COLUMN detail TEXT;
        CREATE UNIQUE INDEX windows_by_scope ON windows(kind, scope_kind, scope, start)
            WHERE scope IS NOT NULL;
        -- The verdict answered when the bounce came in (NULL for bounces
        -- stored before verdicts existed), and the provider it counts under.
        ALTER TABLE bounces ADD COLUMN verdict TEXT;
        ALTER TABLE bounces ADD COLUMN provider TEXT;
        CREATE INDEX bounces_by_verdict ON bounces(verdict, at);
        -- A suppression a later window turned over.
        CREATE TABLE reinstatements (
            id          INTEGER PRIMARY KEY,
            bounce_id   INTEGER NOT NULL UNIQUE REFERENCES bounces(id),
            window_id   INTEGER REFERENCES windows(id),
            created_at  INTEGER NOT NULL,
            verdict     TEXT NOT NULL,       -- what it is now
            reason      TEXT NOT NULL
        );
        CREATE INDEX reinstatements_by_time ON reinstatements(created_at);
        "#;

const M4_ALERTS: &str = r#"
        -- Alert delivery: how far each webhook target got through the outbox.
        CREATE TABLE alert_cursors (
            target      TEXT PRIMARY KEY,
            last_id     INTEGER NOT NULL      -- last outbox id taken on or skipped
        );
        CREATE TABLE alert_deliveries (
            id           INTEGER PRIMARY KEY,
            outbox_id    INTEGER NOT NULL REFERENCES outbox(id),
            target       TEXT NOT NULL,
            status       TEXT NOT NULL,       -- pending | delivered | failed
            attempts     INTEGER NOT NULL,
            next_attempt INTEGER,
            last_attempt INTEGER,
            last_error   TEXT,
            delivered_at INTEGER,
            UNIQUE (outbox_id, target)
        );
        CREATE INDEX alert_deliveries_pending ON alert_deliveries(target, status, outbox_id);
        "#;

/// Opens (creating if needed) and migrates a database.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        let _ = std::fs::create_dir_all(dir);
    }
    create_private(path);
    let mut conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let pragma = |conn: &Connection| -> rusqlite::Result<()> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
    };
    pragma(&conn).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    migrations()
        .to_latest(&mut conn)
        .map_err(|source| StoreError::Migrate {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(conn)
}

/// Creates a missing database file readable by its owner only: it holds
/// recipient addresses. SQLite gives its `-wal` and `-shm` files the same
/// mode. An existing file keeps the mode its owner chose.
pub(super) fn create_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
}

const M5_AUTO_WATCH: &str = r#"
        CREATE TABLE auto_watched (
            domain      TEXT PRIMARY KEY,
            since       INTEGER NOT NULL,   -- its first bounce, unix milliseconds
            last_bounce INTEGER NOT NULL
        );
        "#;

const M6_DELIVERED: &str = r#"
        -- Successful deliveries, counted per domain and minute (never one
        -- row per delivery): the denominator of a provider's unknown-user
        -- rate. One row per lot: the deliveries of one domain in one minute
        -- of one input; the same lot read twice counts once (digest).
        CREATE TABLE delivered (
            id          INTEGER PRIMARY KEY,
            domain      TEXT NOT NULL,
            provider    TEXT,                 -- what the domain counted under then
            minute      INTEGER NOT NULL,     -- unix milliseconds, the minute's start
            count       INTEGER NOT NULL,
            digest      INTEGER NOT NULL UNIQUE
        );
        CREATE INDEX delivered_by_time ON delivered(minute);
        "#;

const M7_ANOMALY_LAST_BOUNCE: &str = r#"
        -- An open anomaly's last unknown-user bounce: a question asked later
        -- than a window after it (or past max_duration) finds the burst over,
        -- whether or not a daemon has ticked since.
        ALTER TABLE windows ADD COLUMN last_bounce INTEGER;
        "#;

const M8_HELD_RUNS: &str = r#"
        -- A consensus answer that departs from the baseline and is held until
        -- other domains vouch for our resolver: 1 until a check believes it.
        -- A bounce in its time is not judged as if the change were known.
        ALTER TABLE runs ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
        "#;

const M9_FEED_CURSORS: &str = r#"
        -- How far a reader of the stored bounces (the auto-watcher) got: it
        -- goes on from there after a restart, and reads what was stored
        -- while no daemon ran (bounded by how long a bounce keeps a domain).
        CREATE TABLE feed_cursors (
            reader      TEXT PRIMARY KEY,
            last_id     INTEGER NOT NULL
        );
        "#;

const M10_SHARED_DIAGNOSTICS: &str = r#"
        -- A remote server's words, stored once however many bounces carry
        -- them: one email naming 8,000 recipients on one line stored that
        -- line 8,000 times (twice each, with the identity index), 464 MB
        -- from a 59 KB email.
        CREATE TABLE diagnostics (
            id      INTEGER PRIMARY KEY,
            text    TEXT NOT NULL UNIQUE
        );
        INSERT OR IGNORE INTO diagnostics(text)
            SELECT diagnostic FROM bounces WHERE diagnostic IS NOT NULL;
        ALTER TABLE bounces ADD COLUMN diagnostic_id INTEGER REFERENCES diagnostics(id);
        UPDATE bounces SET diagnostic_id = (SELECT id FROM diagnostics WHERE text = bounces.diagnostic)
            WHERE diagnostic IS NOT NULL;
        DROP INDEX bounces_identity;
        CREATE UNIQUE INDEX bounces_identity ON bounces(
            source, recipient, coalesce(at, -1), coalesce(status, ''), coalesce(reply_code, 0),
            coalesce(action, ''), coalesce(message_id, ''), coalesce(diagnostic_id, 0));
        ALTER TABLE bounces DROP COLUMN diagnostic;
        "#;

const M11_RUN_IDENTITY: &str = r#"
        -- A passive import asks whether each sighting is stored already by
        -- its whole identity: 20,000 SecurityTrails records sharing a
        -- first_seen were compared one by one against each other
        -- (quadratic, inside the writer's transaction). Passive runs only:
        -- live checks never ask.
        CREATE INDEX runs_identity ON runs(domain_id, upstream, first_seen, mx)
            WHERE upstream LIKE 'passive:%';
        "#;

pub(super) const M12_FORWARDING: &str = r#"
        -- Forwarding: the ESP requests kept whole for `passthrough` targets
        -- (a request the ESP sends again, byte for byte, is kept once).
        CREATE TABLE feed_requests (
            id          INTEGER PRIMARY KEY,
            received_at INTEGER NOT NULL,
            receiver    TEXT NOT NULL,         -- ses | sendgrid | mailgun | postmark | bounces
            digest      BLOB NOT NULL UNIQUE,  -- SHA-256 of the receiver, headers and body
            headers     TEXT NOT NULL,         -- the headers kept, one "name: value" per line
            body        BLOB NOT NULL
        );
        -- A forwarding event names its bounce or its request, and carries
        -- what the consumers need to know of it (the verdict, as JSON).
        ALTER TABLE outbox ADD COLUMN bounce_id INTEGER REFERENCES bounces(id);
        ALTER TABLE outbox ADD COLUMN request_id INTEGER REFERENCES feed_requests(id);
        ALTER TABLE outbox ADD COLUMN detail TEXT;
        CREATE INDEX outbox_by_bounce ON outbox(bounce_id) WHERE bounce_id IS NOT NULL;
        -- Alert targets read only alert events: forwarding's are passed over
        -- without being read.
        CREATE INDEX outbox_alerts ON outbox(id) WHERE event NOT IN ('bounce', 'request', 'reinstated', 'undo');
        CREATE INDEX feed_requests_by_time ON feed_requests(received_at);
        -- Held deliveries an operator released; the part of a request a
        -- delivery sends now (JSON indexes of a batch; NULL: all of it),
        -- and the part held once that is delivered.
        ALTER TABLE alert_deliveries ADD COLUMN released INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE alert_deliveries ADD COLUMN parts TEXT;
        ALTER TABLE alert_deliveries ADD COLUMN remainder TEXT;
        ALTER TABLE alert_deliveries ADD COLUMN note TEXT;
        "#;

/// The index alert targets read through (a test compares its list).
#[cfg(test)]
pub(super) const M12_ALERTS_INDEX: &str = "CREATE INDEX outbox_alerts ON outbox(id) WHERE event NOT IN ('bounce', 'request', 'reinstated', 'undo');";

const M13_UNDO: &str = r#"
        -- How a bounce reached us: 'http' (the token, a signed SNS message)
        -- or NULL (a file the operator ingested). Only the first may take an
        -- address off a suppression list.
        ALTER TABLE bounces ADD COLUMN via TEXT;
        CREATE INDEX bounces_by_recipient ON bounces(recipient, at);
        -- Addresses an operator keeps suppressed: `mxwatch undo keep`.
        CREATE TABLE undo_keep (
            address     TEXT PRIMARY KEY,
            created_at  INTEGER NOT NULL
        );
        -- What a delivery came to beyond delivered (an undo: removed,
        -- not_found, dry_run, kept, waiting).
        ALTER TABLE alert_deliveries ADD COLUMN outcome TEXT;
        CREATE INDEX deliveries_done ON alert_deliveries(target, delivered_at)
            WHERE delivered_at IS NOT NULL;
        "#;

const M14_WITHDRAWN: &str = r#"
        -- Why an operator withdrew a window as false (close_reason 'withdrawn').
        ALTER TABLE windows ADD COLUMN close_note TEXT;
        -- Verdicts a withdrawn window had made, judged again without it.
        -- (A verdict otherwise changes only as a reinstatement.)
        CREATE TABLE verdict_changes (
            bounce_id   INTEGER NOT NULL REFERENCES bounces(id),
            window_id   INTEGER NOT NULL REFERENCES windows(id),
            created_at  INTEGER NOT NULL,
            before      TEXT NOT NULL,
            after       TEXT NOT NULL,
            reason      TEXT NOT NULL,
            PRIMARY KEY (bounce_id, window_id)
        );
        "#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_are_valid() {
        migrations().validate().unwrap();
    }

    /// Migration 10 moves every stored diagnostic into the shared table;
    /// none is lost and bounces with the same words share one row.
    #[test]
    fn stored_diagnostics_survive_their_move() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations().to_version(&mut conn, 9).unwrap();
        for (who, words) in [
            ("a", Some("550 5.1.1 no")),
            ("b", Some("550 5.1.1 no")),
            ("c", None),
        ] {
            conn.execute(
                "INSERT INTO bounces(recipient, domain, at, diagnostic, kind, hard, source, ingested_at) \
                 VALUES (?1, 'x.test', 0, ?2, 'user_unknown', 1, 'dsn', 0)",
                rusqlite::params![format!("{who}@x.test"), words],
            )
            .unwrap();
        }
        migrations().to_latest(&mut conn).unwrap();
        let rows: Vec<(String, Option<String>)> = conn
            .prepare(
                "SELECT recipient, (SELECT text FROM diagnostics WHERE id = diagnostic_id) \
                 FROM bounces ORDER BY recipient",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("a@x.test".to_string(), Some("550 5.1.1 no".to_string())),
                ("b@x.test".to_string(), Some("550 5.1.1 no".to_string())),
                ("c@x.test".to_string(), None),
            ]
        );
        let shared: i64 = conn
            .query_row("SELECT count(*) FROM diagnostics", [], |r| r.get(0))
            .unwrap();
        assert_eq!(shared, 1);
    }
}
