//! The server-wide user directory: who is logged in, under which unique name.
//!
//! Names must be unique across all cores, so one authority holds them. It sits behind a `Mutex`
//! touched only at login, logout, `users` pages and presence ticks, never per message: messages find
//! their core through the userID itself. Users are kept in login order so `users` pages are stable.
//!
//! In a cluster (docs/CLUSTER.md) it also holds the other nodes' users, as the names bucket's
//! replica reports them, so counts, pages and the local check of a name are cluster-wide.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::chat::protocol::{self, UserEntry};
use crate::chat::user_id::UserId;

/// Longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 32;

/// Why a name was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum NameError {
    Invalid(&'static str),
    Taken,
}

/// A user's place in the directory; give it back to [`Directory::unregister`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration(u64);

#[derive(Default)]
struct Users {
    by_name: HashMap<Arc<str>, u64>,
    by_login: BTreeMap<u64, (UserId, Arc<str>)>,
    next: u64,
    first_page: Option<FirstPage>,
}

impl Users {
    /// Up to `limit` users in login order starting at `offset`.
    fn entries(&self, offset: usize, limit: usize) -> Vec<UserEntry> {
        self.by_login
            .values()
            .skip(offset)
            .take(limit)
            .map(|(id, name)| UserEntry::new(*id, name))
            .collect()
    }
}

/// The JSON of the first page of users, which every login sends: it changes only when a user on it
/// leaves, or someone joins while it is not full, so it is built once, not once per login.
struct FirstPage {
    limit: usize,
    /// Login number of the page's last user; `u64::MAX` while the page is not full.
    last: u64,
    json: Arc<str>,
}

#[derive(Default)]
pub struct Directory {
    users: Mutex<Users>,
}

/// Checks the naming rules of docs/PROTOCOL.md.
pub fn validate_username(name: &str) -> Result<(), NameError> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err(NameError::Invalid("the username is empty"));
    }
    if chars > MAX_USERNAME_CHARS {
        return Err(NameError::Invalid(
            "the username is longer than 32 characters",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Invalid(
            "the username contains control characters",
        ));
    }
    if name.trim() != name {
        return Err(NameError::Invalid(
            "the username starts or ends with whitespace",
        ));
    }
    Ok(())
}

impl Directory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Users> {
        // A panic elsewhere ends the process, so a poisoned lock never needs recovering from.
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims `name` for `id`, or says why not.
    pub fn register(&self, name: Arc<str>, id: UserId) -> Result<Registration, NameError> {
        validate_username(&name)?;
        let mut users = self.lock();
        if users.by_name.contains_key(&name) {
            return Err(NameError::Taken);
        }
        if users
            .first_page
            .as_ref()
            .is_some_and(|page| page.last == u64::MAX)
        {
            users.first_page = None;
        }
        let seq = users.next;
        users.next += 1;
        users.by_name.insert(name.clone(), seq);
        users.by_login.insert(seq, (id, name));
        Ok(Registration(seq))
    }

    /// Lists another node's user, whom the cluster's names bucket says holds `name`. The bucket is
    /// the authority: a local user still listed under the name (one whose claim is about to fail)
    /// no longer owns it here, and frees only its own entry when it goes.
    pub fn register_remote(&self, name: Arc<str>, id: UserId) -> Registration {
        let mut users = self.lock();
        users.first_page = None;
        let seq = users.next;
        users.next += 1;
        users.by_name.insert(name.clone(), seq);
        users.by_login.insert(seq, (id, name));
        Registration(seq)
    }

    /// Frees the user's name.
    pub fn unregister(&self, registration: Registration) {
        let mut users = self.lock();
        if users
            .first_page
            .as_ref()
            .is_some_and(|page| registration.0 <= page.last)
        {
            users.first_page = None;
        }
        if let Some((_, name)) = users.by_login.remove(&registration.0) {
            if users.by_name.get(&name) == Some(&registration.0) {
                users.by_name.remove(&name);
            }
        }
    }

    /// Up to `limit` users in login order starting at `offset`, and the total count.
    pub fn page(&self, offset: usize, limit: usize) -> (Vec<UserEntry>, usize) {
        let users = self.lock();
        (users.entries(offset, limit), users.by_login.len())
    }

    /// The first `limit` users as JSON, and the total count; cached between changes to that page.
    pub fn first_page_json(&self, limit: usize) -> (Arc<str>, usize) {
        let mut users = self.lock();
        let count = users.by_login.len();
        if let Some(page) = users.first_page.as_ref().filter(|page| page.limit == limit) {
            return (page.json.clone(), count);
        }
        let entries = users.entries(0, limit);
        let last = if entries.len() < limit {
            u64::MAX
        } else {
            *users
                .by_login
                .keys()
                .nth(limit - 1)
                .expect("the page is full")
        };
        let json: Arc<str> = protocol::user_list_json(&entries).into();
        users.first_page = Some(FirstPage {
            limit,
            last,
            json: json.clone(),
        });
        (json, count)
    }

    pub fn len(&self) -> usize {
        self.lock().by_login.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_until_freed() {
        let directory = Directory::default();
        let alice = directory
            .register("alice".into(), UserId::new(0, 0))
            .unwrap();
        assert_eq!(
            directory.register("alice".into(), UserId::new(1, 0)),
            Err(NameError::Taken)
        );
        directory.unregister(alice);
        assert!(directory
            .register("alice".into(), UserId::new(1, 0))
            .is_ok());
    }

    #[test]
    fn a_remote_holder_takes_the_name_from_a_pending_local_one() {
        let directory = Directory::default();
        let local = directory.register("bob".into(), UserId::new(0, 1)).unwrap();
        let remote = directory.register_remote("bob".into(), UserId::new(0, 2));
        directory.unregister(local);
        assert_eq!(
            directory.register("bob".into(), UserId::new(0, 1)),
            Err(NameError::Taken)
        );
        assert_eq!(directory.len(), 1);
        directory.unregister(remote);
        assert!(directory.is_empty());
    }

    #[test]
    fn naming_rules() {
        assert!(validate_username("Zoë 🚀").is_ok());
        assert!(validate_username(&"é".repeat(32)).is_ok());
        for bad in ["", " bob", "bob ", "b\u{7}ob", &"x".repeat(33)] {
            assert!(
                matches!(validate_username(bad), Err(NameError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_cached_first_page_follows_joins_and_leaves() {
        let directory = Directory::default();
        let names = |d: &Directory| -> Vec<String> {
            let (json, _) = d.first_page_json(2);
            let list: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
            list.iter()
                .map(|u| u["username"].as_str().unwrap().to_string())
                .collect()
        };
        let a = directory.register("a".into(), UserId::new(0, 0)).unwrap();
        assert_eq!(names(&directory), ["a"]);
        directory.register("b".into(), UserId::new(0, 0)).unwrap();
        assert_eq!(
            names(&directory),
            ["a", "b"],
            "a join into a page that was not full"
        );
        let c = directory.register("c".into(), UserId::new(0, 0)).unwrap();
        assert_eq!(
            names(&directory),
            ["a", "b"],
            "a join past the full page changes nothing"
        );
        directory.unregister(c);
        assert_eq!(names(&directory), ["a", "b"]);
        directory.register("d".into(), UserId::new(0, 0)).unwrap();
        directory.unregister(a);
        assert_eq!(names(&directory), ["b", "d"], "a leave from the page");
        assert_eq!(directory.first_page_json(2).1, 2);
    }

    #[test]
    fn pages_follow_login_order() {
        let directory = Directory::default();
        for name in ["a", "b", "c", "d"] {
            directory.register(name.into(), UserId::new(0, 0)).unwrap();
        }
        let (page, count) = directory.page(1, 2);
        assert_eq!(count, 4);
        assert_eq!(
            page.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
    }
}
