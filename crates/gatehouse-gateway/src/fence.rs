//! Fencing: a gateway that may have been dropped from the cluster closes its clients.
//!
//! While a gateway is paused or cut off from every registry, the registries drop it when its
//! lease runs out and workers stop sending to it. Its clients cannot tell: their sockets are
//! still open. So the gateway checks its own lease clock (renewed by registry acks of its
//! heartbeats, see `gatehouse_core::lease`) and, once per lapse, closes every client with 1012
//! so that each reconnects and catches up from the store. Until a registry renews it, the
//! gateway is unready and refuses handshakes.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// How often the lease is checked: a small fraction of any sensible lease (the default is 6 s),
/// and cheap (one short lock).
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Fences the gateway once for every lapse of its lease, until `token` is cancelled.
pub(crate) async fn watch(hub: Arc<Hub>, token: CancellationToken) {
    let mut acted_on = hub.lease().lapses();
    let mut fenced = false;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let lapses = hub.lease().check();
        if lapses > acted_on {
            acted_on = lapses;
            fenced = true;
            hub.fence();
        }
        if fenced && !hub.is_fenced() {
            fenced = false;
            tracing::info!("lease renewed by a registry: accepting clients again");
        }
    }
}
