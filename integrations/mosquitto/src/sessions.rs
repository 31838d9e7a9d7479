//! The grant cache: one entry per connected client, decided locally for every publish,
//! subscribe and delivery, plus the queue of clients to kick (revoked or expired).
//!
//! Guarantees: a revoked or expired session is denied every topic action at once, even before
//! the broker thread kicks it; a kick names a session (client id + generation), so a client that
//! reconnected with a fresh credential in the meantime is never kicked by a stale event; a
//! revocation that arrives while a CONNECT for the same credential is in flight is remembered
//! for [`RECENT_WINDOW`] and refuses that CONNECT.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use mqtt_tokend_client::{RevocationEvent, TopicAction};

/// How long a revocation is remembered to catch a CONNECT that raced it.
pub const RECENT_WINDOW: Duration = Duration::from_secs(60);
/// Most revocations remembered for that purpose.
const RECENT_MAX: usize = 10_000;

/// What a client may do, as the service granted it at CONNECT: the service's own type (from the
/// client crate), so the plugin decides with the service's rules.
pub use mqtt_tokend_client::Grant;

/// The kind of access Mosquitto asks about (`MOSQ_ACL_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Delivery of a message to this client (it is the subscriber).
    Read,
    /// This client publishes.
    Write,
    /// This client subscribes to a filter.
    Subscribe,
    /// This client unsubscribes: always allowed.
    Unsubscribe,
}

/// Whether `grant` allows `access` on `topic` (a name, or a filter for subscribe), by the
/// service's own rules (`Grant::check`, `Grant::allows_delivery`).
pub fn allows(grant: &Grant, access: Access, topic: &str) -> bool {
    match access {
        Access::Write => grant.check(TopicAction::Publish, topic).is_ok(),
        Access::Read => grant.allows_delivery(topic),
        Access::Subscribe => grant
            .check(TopicAction::Subscribe, strip_shared(topic))
            .is_ok(),
        Access::Unsubscribe => true,
    }
}

/// `$share/<group>/<filter>` subscribes to `<filter>`; the grant is checked against that.
fn strip_shared(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, f)| f)
}

/// Why a grant was not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A revocation seen in the last [`RECENT_WINDOW`] covers it.
    RecentlyRevoked,
    /// It has already expired.
    Expired,
}

struct Session {
    /// Distinguishes this session from earlier ones with the same client id.
    generation: u64,
    /// The broker's `struct mosquitto *`, as an address: the connection this grant belongs to.
    connection: usize,
    grant: Grant,
    /// Set by a revocation; the session is denied everything until it is kicked.
    revoked: bool,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    /// (expire_ms, generation, client id) of sessions with an expiry.
    expiries: BTreeSet<(i64, u64, String)>,
    /// Sessions to kick on the next broker tick.
    kicks: Vec<(String, u64)>,
    recent: VecDeque<(Instant, RevocationEvent)>,
    next_generation: u64,
}

/// The grant cache. Shared by the broker thread and the watch task.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent before it can panic (no user code
        // runs under the lock), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Caches the grant of a client that just authenticated on `connection`, replacing any
    /// earlier session with the same client id (Mosquitto takes the old connection over).
    ///
    /// # Errors
    /// The grant is already expired, or was revoked while the CONNECT was being checked.
    pub fn insert(
        &self,
        client_id: &str,
        connection: usize,
        grant: Grant,
        now_ms: i64,
        now: Instant,
    ) -> Result<(), Refused> {
        let mut inner = self.lock();
        prune_recent(&mut inner.recent, now);
        if inner.recent.iter().any(|(_, r)| r.hits(&grant)) {
            return Err(Refused::RecentlyRevoked);
        }
        if grant.expire_time != 0 && grant.expire_time <= now_ms {
            return Err(Refused::Expired);
        }
        inner.next_generation += 1;
        let generation = inner.next_generation;
        if grant.expire_time != 0 {
            inner
                .expiries
                .insert((grant.expire_time, generation, client_id.to_owned()));
        }
        let session = Session {
            generation,
            connection,
            grant,
            revoked: false,
        };
        if let Some(old) = inner.sessions.insert(client_id.to_owned(), session) {
            forget_expiry(&mut inner, client_id, &old);
        }
        Ok(())
    }

    /// Drops the session of `client_id` if it belongs to `connection` (a taken-over
    /// connection's disconnect must not drop its successor's grant).
    pub fn remove(&self, client_id: &str, connection: usize) {
        let mut inner = self.lock();
        if inner
            .sessions
            .get(client_id)
            .is_some_and(|s| s.connection == connection)
        {
            if let Some(old) = inner.sessions.remove(client_id) {
                forget_expiry(&mut inner, client_id, &old);
            }
        }
    }

    /// Whether the client on `connection` may do `access` on `topic`. Unknown, revoked,
    /// expired or taken-over sessions may do nothing.
    pub fn allows(
        &self,
        client_id: &str,
        connection: usize,
        access: Access,
        topic: &str,
        now_ms: i64,
    ) -> bool {
        let inner = self.lock();
        let Some(s) = inner.sessions.get(client_id) else {
            return false;
        };
        s.connection == connection
            && !s.revoked
            && (s.grant.expire_time == 0 || now_ms < s.grant.expire_time)
            && allows(&s.grant, access, topic)
    }

    /// Applies a revocation: every session it hits is denied from now on and queued for a
    /// kick. Returns how many sessions it hit.
    pub fn revoke(&self, revocation: RevocationEvent, now: Instant) -> usize {
        let mut inner = self.lock();
        let mut hit = Vec::new();
        for (client_id, s) in inner.sessions.iter_mut() {
            if !s.revoked && revocation.hits(&s.grant) {
                s.revoked = true;
                hit.push((client_id.clone(), s.generation));
            }
        }
        let n = hit.len();
        inner.kicks.extend(hit);
        prune_recent(&mut inner.recent, now);
        if inner.recent.len() >= RECENT_MAX {
            inner.recent.pop_front();
        }
        inner.recent.push_back((now, revocation));
        n
    }

    /// Client ids to kick now: revoked sessions and sessions whose grant expired at or before
    /// `now_ms`. They leave the cache.
    pub fn take_due(&self, now_ms: i64) -> Vec<String> {
        let mut inner = self.lock();
        let mut due = std::mem::take(&mut inner.kicks);
        while let Some(first) = inner.expiries.first() {
            if first.0 > now_ms {
                break;
            }
            if let Some((_, generation, client_id)) = inner.expiries.pop_first() {
                due.push((client_id, generation));
            }
        }
        let mut out = Vec::with_capacity(due.len());
        for (client_id, generation) in due {
            if inner
                .sessions
                .get(&client_id)
                .is_some_and(|s| s.generation == generation)
            {
                if let Some(old) = inner.sessions.remove(&client_id) {
                    forget_expiry(&mut inner, &client_id, &old);
                }
                out.push(client_id);
            }
        }
        out
    }

    /// Number of cached sessions.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// True if no session is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn forget_expiry(inner: &mut Inner, client_id: &str, old: &Session) {
    if old.grant.expire_time != 0 {
        inner
            .expiries
            .remove(&(old.grant.expire_time, old.generation, client_id.to_owned()));
    }
}

fn prune_recent(recent: &mut VecDeque<(Instant, RevocationEvent)>, now: Instant) {
    while recent
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) > RECENT_WINDOW)
    {
        recent.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use mqtt_tokend_client::{AuthMode, GrantToken, RevocationKind};

    use super::*;

    fn token_grant(fp: &str, expire_ms: i64) -> Grant {
        Grant {
            mode: AuthMode::Token,
            instance_id: "i".into(),
            publish: vec!["a/b".into()],
            subscribe: vec!["a/#".into()],
            expire_time: expire_ms,
            token_fingerprints: vec![fp.into()],
            key_id: "AK".into(),
            tokens: vec![GrantToken {
                fingerprint: fp.into(),
                token_handle: format!("th_{fp}"),
                access_key_id: "MINTER".into(),
                minted_revision: 5,
            }],
        }
    }

    fn device_grant(key: &str) -> Grant {
        Grant {
            mode: AuthMode::DeviceCredential,
            instance_id: "i".into(),
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
            expire_time: 0,
            token_fingerprints: vec![],
            key_id: key.into(),
            tokens: vec![],
        }
    }

    fn revocation(kind: RevocationKind, fingerprint: &str, key_id: &str) -> RevocationEvent {
        RevocationEvent {
            revision: 1,
            kind,
            instance_id: "i".into(),
            token_fingerprint: fingerprint.into(),
            client_id: String::new(),
            key_id: key_id.into(),
            reason: String::new(),
            expire_time: 0,
            revoke_time: 0,
            token_handle: String::new(),
        }
    }

    fn token_revoked(fp: &str) -> RevocationEvent {
        revocation(RevocationKind::TokenRevoked, fp, "")
    }

    #[test]
    fn grant_uses_the_shared_matcher() {
        let g = token_grant("f", 0);
        assert!(allows(&g, Access::Write, "a/b"));
        assert!(!allows(&g, Access::Write, "a/c"));
        assert!(!allows(&g, Access::Write, "a/+"));
        assert!(allows(&g, Access::Subscribe, "a/+/c"));
        assert!(allows(&g, Access::Subscribe, "$share/g/a/#"));
        assert!(!allows(&g, Access::Subscribe, "#"));
        assert!(!allows(&g, Access::Subscribe, "a/#/x"));
        assert!(allows(&g, Access::Read, "a/x/y"));
        assert!(!allows(&g, Access::Read, "b"));
        let all = device_grant("DK");
        assert!(!allows(&all, Access::Read, "$SYS/broker/uptime"));
        assert!(!allows(&all, Access::Subscribe, "$SYS/#"));
    }

    #[test]
    fn revocation_kicks_exactly_the_holder() {
        let s = Sessions::default();
        let now = Instant::now();
        s.insert("c1", 1, token_grant("f1", 0), 0, now).unwrap();
        s.insert("c2", 2, token_grant("f2", 0), 0, now).unwrap();
        s.insert("d1", 3, device_grant("DK1"), 0, now).unwrap();
        assert_eq!(s.revoke(token_revoked("f1"), now), 1);
        assert!(!s.allows("c1", 1, Access::Write, "a/b", 0));
        assert!(s.allows("c2", 2, Access::Write, "a/b", 0));
        assert_eq!(s.take_due(0), vec!["c1".to_string()]);
        let dev = revocation(RevocationKind::DeviceCredentialRefreshed, "", "DK1");
        assert_eq!(s.revoke(dev, now), 1);
        assert_eq!(s.take_due(0), vec!["d1".to_string()]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_scope_revocation_kicks_every_session_in_its_scope_at_once() {
        let s = Sessions::default();
        let now = Instant::now();
        for c in ["a1", "a2", "a3"] {
            s.insert(c, 1, token_grant(c, 0), 0, now).unwrap();
        }
        let mut other = token_grant("b1", 0);
        other.tokens[0].access_key_id = "OTHER".into();
        s.insert("b1", 2, other, 0, now).unwrap();
        s.insert("d1", 3, device_grant("MINTER"), 0, now).unwrap();
        let scope = RevocationEvent {
            revision: 6,
            ..revocation(RevocationKind::TokensOfKeyRevoked, "", "MINTER")
        };
        assert_eq!(s.revoke(scope.clone(), now), 3);
        let mut kicked = s.take_due(0);
        kicked.sort();
        assert_eq!(kicked, ["a1", "a2", "a3"]);
        // A token of the key minted after the cut-off connects; one minted before does not.
        let mut fresh = token_grant("a4", 0);
        fresh.tokens[0].minted_revision = 6;
        assert_eq!(s.insert("a4", 4, fresh, 0, now), Ok(()));
        assert_eq!(
            s.insert("a5", 5, token_grant("a5", 0), 0, now),
            Err(Refused::RecentlyRevoked)
        );
        let instance = RevocationEvent {
            revision: 7,
            ..revocation(RevocationKind::InstanceTokensRevoked, "", "")
        };
        assert_eq!(s.revoke(instance, now), 2, "a4 and b1; the device stays");
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn reconnect_is_not_kicked_by_a_stale_event_nor_dropped_by_old_disconnect() {
        let s = Sessions::default();
        let now = Instant::now();
        s.insert("c", 1, token_grant("old", 0), 0, now).unwrap();
        s.revoke(token_revoked("old"), now);
        // The client reconnects with a new token before the tick drains the kick.
        s.insert("c", 2, token_grant("new", 0), 0, now).unwrap();
        assert!(s.take_due(0).is_empty());
        s.remove("c", 1);
        assert!(s.allows("c", 2, Access::Write, "a/b", 0));
        assert!(!s.allows("c", 1, Access::Write, "a/b", 0));
    }

    #[test]
    fn a_connect_racing_its_revocation_is_refused() {
        let s = Sessions::default();
        let now = Instant::now();
        s.revoke(token_revoked("f"), now);
        assert_eq!(
            s.insert("c", 1, token_grant("f", 0), 0, now),
            Err(Refused::RecentlyRevoked)
        );
        let later = now + RECENT_WINDOW + Duration::from_secs(1);
        assert_eq!(s.insert("c", 1, token_grant("f", 0), 0, later), Ok(()));
    }

    #[test]
    fn expiry_kicks_at_the_expiry_time() {
        let s = Sessions::default();
        let now = Instant::now();
        s.insert("c", 1, token_grant("f", 1000), 0, now).unwrap();
        assert!(s.allows("c", 1, Access::Write, "a/b", 999));
        assert!(s.take_due(999).is_empty());
        assert!(!s.allows("c", 1, Access::Write, "a/b", 1000));
        assert_eq!(s.take_due(1000), vec!["c".to_string()]);
        assert_eq!(
            s.insert("c", 1, token_grant("f", 1000), 1000, now),
            Err(Refused::Expired)
        );
    }
}
