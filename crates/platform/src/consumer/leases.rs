//! Partition leases: which replica of a consumer reads which partition, decided in
//! PostgreSQL rather than by Kafka's group coordinator.
//!
//! Every replica of a consumer opens a session of its own and holds, as session-level
//! advisory locks in the namespace of its group (`pg_try_advisory_lock(namespace,
//! partition)`):
//! - the membership lock ([`MEMBER`]), in shared mode: how many replicas hold it is how many
//!   share the topic;
//! - one exclusive lock per partition it reads.
//!
//! Every [`INTERVAL`] a replica counts the members and moves towards its fair share,
//! `ceil(partitions / members)`: it gives up partitions above it (after it stopped reading
//! them) and tries to take free ones up to it. Together the shares cover every partition, so
//! every partition is read by exactly one live replica once the rounds settle.
//!
//! A replica that dies loses its locks with its session: at once when its process dies (the
//! kernel closes the socket, even on `kill -9`), within about 25 s when its host vanishes
//! (TCP keepalives set on the session). The survivors take its partitions in their next round.
//! A replica whose session breaks stops reading every partition before it takes any again.
//!
//! Why not Kafka's group protocol: the embedded development broker's coordinator (tansu 0.6)
//! neither evicts a dead member's partitions nor recovers from a leader that died, and with
//! leases the behaviour is the same on every broker. Offsets are still committed to the Kafka
//! group, so Kafka's tools show each consumer's position.

use std::collections::BTreeSet;

use sqlx::{PgConnection, PgPool};

/// How often a replica checks its leases and the fair share.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The second key of the membership lock (partitions are `0..MEMBER`).
pub const MEMBER: i32 = i32::MAX;

/// What a round decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Partitions locked in this round: start reading them.
    pub acquired: Vec<i32>,
    /// Partitions held above the fair share: stop reading them, then [`Leases::release`].
    pub surplus: Vec<i32>,
}

/// One replica's leases of one consumer group.
#[derive(Debug)]
pub struct Leases {
    pool: PgPool,
    namespace: i32,
    session: Option<PgConnection>,
    held: BTreeSet<i32>,
}

/// The advisory-lock namespace of `group`: a stable non-negative 31-bit hash (FNV-1a).
pub fn namespace(group: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in group.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // Masked to 31 bits: it fits.
    i32::try_from(hash & 0x7fff_ffff).unwrap_or(0)
}

impl Leases {
    /// Leases of consumer group `group`, with sessions from `pool`.
    pub fn new(pool: PgPool, group: &str) -> Self {
        Self {
            pool,
            namespace: namespace(group),
            session: None,
            held: BTreeSet::new(),
        }
    }

    /// The partitions held now.
    pub fn held(&self) -> &BTreeSet<i32> {
        &self.held
    }

    /// One round for a topic of `partitions` partitions: joins as a member if not yet, locks
    /// free partitions up to the fair share, and names those held above it.
    ///
    /// # Errors
    /// The database error; the session is then closed and every lease lost (call
    /// [`Leases::forget`] and stop reading them).
    pub async fn rebalance(&mut self, partitions: i32) -> Result<Plan, sqlx::Error> {
        let result = bounded(self.round(partitions)).await;
        if result.is_err() {
            self.session = None;
        }
        result
    }

    async fn round(&mut self, partitions: i32) -> Result<Plan, sqlx::Error> {
        let namespace = self.namespace;
        self.open().await?;
        let Self { session, held, .. } = self;
        let Some(session) = session.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        let members: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND objsubid = 2 \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND classid = $1::bigint::oid AND objid = $2::bigint::oid",
        )
        .bind(i64::from(namespace))
        .bind(i64::from(MEMBER))
        .fetch_one(&mut *session)
        .await?;
        let share = fair_share(partitions, members);
        let mut plan = Plan::default();
        // Partitions beyond the topic's end (it shrank, or a stale count) go first.
        let mut surplus: Vec<i32> = held.iter().copied().filter(|&p| p >= partitions).collect();
        let mut keep = held.len() - surplus.len();
        for &partition in held.iter().rev() {
            if keep <= share {
                break;
            }
            if partition < partitions {
                surplus.push(partition);
                keep -= 1;
            }
        }
        plan.surplus = surplus;
        if keep < share {
            // Start at a different partition in each replica (by backend pid), so replicas
            // joining together do not all try the same ones first.
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut *session)
                .await?;
            let start = pid.rem_euclid(partitions.max(1));
            for step in 0..partitions {
                if keep >= share {
                    break;
                }
                let partition = (start + step) % partitions;
                if held.contains(&partition) {
                    continue;
                }
                let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                    .bind(namespace)
                    .bind(partition)
                    .fetch_one(&mut *session)
                    .await?;
                if locked {
                    held.insert(partition);
                    plan.acquired.push(partition);
                    keep += 1;
                }
            }
        }
        Ok(plan)
    }

    /// Checks the session is alive (a round without changes, while the partition count is
    /// unknown).
    ///
    /// # Errors
    /// As [`Leases::rebalance`].
    pub async fn renew(&mut self) -> Result<(), sqlx::Error> {
        if self.session.is_none() {
            return Ok(());
        }
        let result = match self.session.as_mut() {
            Some(session) => bounded(sqlx::query("SELECT 1").execute(session))
                .await
                .map(drop),
            None => Ok(()),
        };
        if result.is_err() {
            self.session = None;
        }
        result
    }

    /// Releases `partitions` (no longer read) for other replicas.
    ///
    /// # Errors
    /// As [`Leases::rebalance`].
    pub async fn release(&mut self, partitions: &[i32]) -> Result<(), sqlx::Error> {
        let namespace = self.namespace;
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        for &partition in partitions {
            let result = bounded(
                sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                    .bind(namespace)
                    .bind(partition)
                    .execute(&mut *session),
            )
            .await;
            if let Err(error) = result {
                self.session = None;
                return Err(error);
            }
            self.held.remove(&partition);
        }
        Ok(())
    }

    /// Forgets every lease after the session broke; returns the partitions that were held
    /// (stop reading them).
    pub fn forget(&mut self) -> Vec<i32> {
        self.session = None;
        std::mem::take(&mut self.held).into_iter().collect()
    }

    /// Ends the session, releasing every lease at once.
    pub async fn close(&mut self) {
        self.held.clear();
        if let Some(session) = self.session.take()
            && let Err(error) = sqlx::Connection::close(session).await
        {
            tracing::debug!(%error, "lease session did not close cleanly");
        }
    }

    /// Opens the lease session (and joins as a member) when there is none.
    async fn open(&mut self) -> Result<(), sqlx::Error> {
        if self.session.is_none() {
            // A connection of its own, outside the pool: the locks live as long as it.
            let mut session = self.pool.acquire().await?.detach();
            // Notice a vanished host in about 25 s rather than the server's default of hours
            // (ignored on Unix sockets, where a dead peer is noticed at once).
            sqlx::query(
                "SELECT set_config('tcp_keepalives_idle', '10', false), \
                 set_config('tcp_keepalives_interval', '5', false), \
                 set_config('tcp_keepalives_count', '3', false), \
                 set_config('statement_timeout', '10s', false)",
            )
            .execute(&mut session)
            .await?;
            sqlx::query("SELECT pg_advisory_lock_shared($1, $2)")
                .bind(self.namespace)
                .bind(MEMBER)
                .execute(&mut session)
                .await?;
            self.held.clear();
            self.session = Some(session);
        }
        Ok(())
    }
}

/// How long a lease query may take before the session counts as broken (the server's
/// `statement_timeout` does not help when the network is what failed).
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `query` within [`QUERY_TIMEOUT`].
async fn bounded<T>(
    query: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(QUERY_TIMEOUT, query)
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "a lease query took longer than 5 s",
            )))
        })
}

/// The most partitions one of `members` replicas reads: `ceil(partitions / members)`.
fn fair_share(partitions: i32, members: i64) -> usize {
    let partitions = usize::try_from(partitions.max(0)).unwrap_or(0);
    let members = usize::try_from(members.max(1)).unwrap_or(1);
    partitions.div_ceil(members)
}

#[cfg(test)]
mod tests {
    use super::{fair_share, namespace};

    #[test]
    fn shares_cover_every_partition() {
        for partitions in 0..20 {
            for members in 1..8 {
                let share = fair_share(partitions, members);
                assert!(share * usize::try_from(members).unwrap() >= partitions as usize);
                assert!(share <= partitions as usize);
            }
        }
        assert_eq!(fair_share(3, 0), 3, "a member always counts itself");
    }

    #[test]
    fn namespaces_are_stable_and_non_negative() {
        assert_eq!(
            namespace("taskmesh-audit-reminders"),
            namespace("taskmesh-audit-reminders")
        );
        assert_ne!(namespace("a.taskmesh-task"), namespace("b.taskmesh-task"));
        for group in ["", "x", "prod.taskmesh-reminder"] {
            assert!(namespace(group) >= 0);
        }
    }
}
