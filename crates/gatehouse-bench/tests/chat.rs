//! The chat scenario against a minimal in-test chat server implementing the documented frames
//! (`?uid=` authentication, `send` → `ack` to the sender and `message` to the recipient).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use gatehouse_bench::{BenchConfig, Mode, Scenario};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[derive(Default)]
struct Chat {
    next_id: AtomicU64,
    users: Mutex<HashMap<String, mpsc::UnboundedSender<String>>>,
}

async fn upgrade(
    State(chat): State<Arc<Chat>>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let uid = query.get("uid").cloned().unwrap_or_default();
    ws.on_upgrade(move |socket| session(chat, uid, socket))
}

async fn session(chat: Arc<Chat>, uid: String, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    chat.users.lock().unwrap().insert(uid.clone(), tx.clone());
    loop {
        tokio::select! {
            Some(out) = rx.recv() => if socket.send(Message::text(out)).await.is_err() { break },
            frame = socket.recv() => {
                let Some(Ok(Message::Text(text))) = frame else { break };
                let request: Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(request["type"], "send");
                let id = chat.next_id.fetch_add(1, Ordering::Relaxed);
                let push = json!({"type": "message", "id": id, "from": uid, "to": request["to"],
                    "text": request["text"], "ts": 0, "cid": request["cid"]});
                let recipient = chat.users.lock().unwrap().get(request["to"].as_str().unwrap()).cloned();
                if let Some(recipient) = recipient {
                    let _ = recipient.send(push.to_string());
                }
                let _ = tx.send(json!({"type": "ack", "cid": request["cid"], "id": id}).to_string());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_counts_pushes_and_acks() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/ws", get(upgrade))
        .with_state(Arc::new(Chat::default()));
    tokio::spawn(async move { axum::serve(listener, app).await });

    for mode in [Mode::Open { rate: 200.0 }, Mode::Closed { inflight: 1 }] {
        let mut config = BenchConfig::new(Scenario::Chat, vec![format!("ws://{addr}/ws")], 10);
        config.mode = mode;
        config.warmup = Duration::from_millis(100);
        config.duration = Duration::from_millis(500);
        config.url_query = Some("tenant=bench".into());
        let report = gatehouse_bench::run(config, |_| {}).await.unwrap();
        println!("{report}");
        assert_eq!(report.ready, 10);
        assert!(report.sent > 0);
        assert_eq!(report.delivered, report.expected);
        assert_eq!(report.expected, report.sent);
        assert_eq!(report.acked, Some(report.sent));
        assert_eq!((report.lost, report.duplicated), (0, 0));
        assert_eq!(report.ack_latency_us.unwrap().count, report.sent);
    }
}
