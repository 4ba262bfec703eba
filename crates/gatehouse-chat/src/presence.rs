//! Presence: a user's contacts learn when its first device connects and when its last one has
//! been gone for the grace period.
//!
//! "First" and "last" are read from the cluster's routing table (the uid's bound
//! connections), never from a poll of connections: a handshake that found no other connection
//! of the uid brings it online; after a close, the worker waits for the grace period and takes
//! it offline only if the table then lists no connection of the uid. A device that comes back
//! within the grace period therefore causes no offline/online flap. Which state was last
//! announced is kept in the store and flipped with a conditional update, so when several
//! workers see the same change (two devices closing on two workers) only one announces it.
//! Pushes go to at most `presence_contacts` contacts, and only to the gateways that hold them.

use std::sync::Arc;

use dashmap::DashMap;
use gatehouse_sdk::{Cluster, Frame};
use gatehouse_store::Store;
use serde_json::json;

use crate::common::{count, now_ms};

/// The presence state a worker keeps: the uids whose offline announcement is pending here.
#[derive(Debug, Default, Clone)]
pub(crate) struct Presence {
    /// Uid → the generation of its latest pending offline check.
    pending: Arc<DashMap<String, u64>>,
}

impl Presence {
    /// After `uid`'s handshake bound it: announces it online when the routing table listed no
    /// other connection of it (`others`, counted before the bind) and it was not waiting to be
    /// announced offline here.
    pub(crate) async fn connected(
        &self,
        cluster: &Cluster,
        store: &Store,
        uid: &str,
        others: usize,
        max_contacts: u32,
    ) {
        self.pending.remove(uid);
        if others > 0 {
            return;
        }
        match store.go_online(uid).await {
            Ok(true) => {
                let frame = Frame::json(&json!({"type": "presence", "uid": uid, "status": "online"}));
                announce(cluster, store, uid, &frame, max_contacts).await;
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%uid, %error, "presence: cannot record the user online"),
        }
    }

    /// After one of `uid`'s connections closed: announces it offline after `grace` if no
    /// connection of it is left then.
    pub(crate) fn disconnected(
        &self,
        cluster: Cluster,
        store: Store,
        uid: String,
        grace: std::time::Duration,
        max_contacts: u32,
    ) {
        let generation = {
            let mut entry = self.pending.entry(uid.clone()).or_insert(0);
            *entry += 1;
            *entry
        };
        let pending = Arc::clone(&self.pending);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            // Only the latest close of the uid decides, and not if it came back meanwhile.
            if pending.get(&uid).is_none_or(|g| *g != generation) {
                return;
            }
            match cluster.client_ids_by_uid(&uid).await {
                Ok(devices) if devices.is_empty() => {}
                Ok(_) => {
                    pending.remove_if(&uid, |_, g| *g == generation);
                    return;
                }
                Err(error) => {
                    tracing::warn!(%uid, %error, "presence: cannot count the uid's connections");
                    return;
                }
            }
            pending.remove_if(&uid, |_, g| *g == generation);
            let last_seen = now_ms();
            match store.go_offline(&uid, last_seen).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%uid, %error, "presence: cannot record the user offline");
                    return;
                }
            }
            let frame = Frame::json(&json!({"type": "presence", "uid": uid, "status": "offline",
                "last_seen": last_seen}));
            announce(&cluster, &store, &uid, &frame, max_contacts).await;
        });
    }
}

/// Pushes `frame` to `uid`'s contacts (at most `max_contacts`); the routing table sends it only
/// to the gateways that hold one of them.
async fn announce(cluster: &Cluster, store: &Store, uid: &str, frame: &Frame, max_contacts: u32) {
    let contacts = match store.contacts_of(uid, max_contacts).await {
        Ok(contacts) => contacts,
        Err(error) => {
            tracing::warn!(%uid, %error, "presence: cannot read contacts");
            return;
        }
    };
    if contacts.is_empty() {
        return;
    }
    match cluster.send_to_uids(&contacts, frame, &[]).await {
        Ok(()) => count("presence"),
        Err(error) => tracing::warn!(%uid, %error, "presence: push failed"),
    }
}
