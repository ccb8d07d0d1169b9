//! Helpers for hush's own tests (not for applications).
#![allow(clippy::panic)]

use sqlx::{Connection, Row};

/// Drops test databases left by runs more than an hour old (their names
/// carry their creation time), so a developer's server does not fill up.
async fn drop_stale(conn: &mut sqlx::PgConnection) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let Ok(rows) = sqlx::query("SELECT datname FROM pg_database WHERE datname LIKE 'hush_test_%'")
        .fetch_all(&mut *conn)
        .await
    else {
        return;
    };
    for row in rows {
        let Ok(name) = row.try_get::<String, _>(0) else {
            continue;
        };
        let created = name.rsplit('_').next().and_then(|n| n.parse::<u128>().ok());
        if created.is_some_and(|c| now.saturating_sub(c) > 3_600_000_000_000)
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

/// A fresh, empty database on the test PostgreSQL server, as a URL. The
/// server is `HUSH_TEST_DATABASE_URL` (an admin URL ending in a database
/// name), by default the local trust-auth server that `.ci/test` makes
/// sure is running. Panics with an explanation when none answers: the
/// PostgreSQL tests are never skipped.
pub async fn test_database() -> String {
    let admin = std::env::var("HUSH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let name = format!(
        "hush_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(conn) => conn,
        Err(e) => {
            panic!("PostgreSQL is not reachable at {admin} ({e}); run .ci/test, which starts one")
        }
    };
    drop_stale(&mut conn).await;
    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
    {
        panic!("cannot create a test database on {admin}: {e}");
    }
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}
