//! [`ChatClient`]: a client of the chat protocol (`docs/protocol.md`), as an app would write one;
//! [`ChatDatabase`]: where a test cluster's chat workers keep their history ([`mariadb`]: a
//! throw-away MariaDB database).

pub mod mariadb;

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};

use crate::client::{Refusal, WsClient};
use crate::postgres::TempDatabase;
use mariadb::TempMariaDb;

/// Where a test cluster keeps its chat history: a SQLite file (removed on drop), or a fresh
/// PostgreSQL or MariaDB database (dropped on drop).
pub enum ChatDatabase {
    /// A SQLite file under the system temp dir.
    Sqlite(std::path::PathBuf),
    /// A throw-away PostgreSQL database.
    Postgres(TempDatabase),
    /// A throw-away MariaDB database.
    MariaDb(TempMariaDb),
}

impl ChatDatabase {
    /// A fresh SQLite file name (the worker creates the file).
    pub fn sqlite() -> ChatDatabase {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        ChatDatabase::Sqlite(std::env::temp_dir().join(format!("gatehouse-chat-{}-{nanos}.db", std::process::id())))
    }

    /// A fresh PostgreSQL database at 127.0.0.1:5432: the test needs PostgreSQL
    /// ([`require`](crate::require)`(Service::Postgres)`, which this calls).
    pub fn postgres() -> ChatDatabase {
        ChatDatabase::Postgres(
            TempDatabase::create().expect("PostgreSQL at 127.0.0.1:5432 (scripts/services starts it)"),
        )
    }

    /// A fresh MariaDB database at 127.0.0.1:3306: the test needs MariaDB
    /// ([`require`](crate::require)`(Service::Mariadb)`, which this calls).
    pub fn mariadb() -> ChatDatabase {
        crate::require(crate::Service::Mariadb);
        ChatDatabase::MariaDb(TempMariaDb::create().expect("MariaDB at 127.0.0.1:3306 (scripts/services starts it)"))
    }

    /// The `--database-url` of the chat workers.
    pub fn url(&self) -> String {
        match self {
            ChatDatabase::Sqlite(path) => format!("sqlite://{}", path.display()),
            ChatDatabase::Postgres(db) => db.url(),
            ChatDatabase::MariaDb(db) => db.url(),
        }
    }

    /// Runs a query that returns one number (with the `sqlite3`, `psql` or `mariadb` client):
    /// on SQLite, the test needs the `sqlite3` shell ([`require`](crate::require)`(Service::Sqlite3)`,
    /// which this calls).
    pub fn count(&self, sql: &str) -> Result<i64> {
        let text = match self {
            ChatDatabase::Postgres(db) => db.query(sql)?,
            ChatDatabase::MariaDb(db) => db.query(sql)?,
            ChatDatabase::Sqlite(path) => {
                crate::require(crate::Service::Sqlite3);
                let output = std::process::Command::new("sqlite3").arg(path).arg(sql).output()?;
                anyhow::ensure!(
                    output.status.success(),
                    "sqlite3 failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8_lossy(&output.stdout).trim().to_owned()
            }
        };
        Ok(text.parse()?)
    }

    /// Counts the rows of the messages table (proof that a refused request stored nothing).
    pub fn stored_messages(&self) -> Result<i64> {
        self.count("SELECT count(*) FROM messages")
    }
}

impl Drop for ChatDatabase {
    fn drop(&mut self) {
        if let ChatDatabase::Sqlite(path) = self {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

/// A signed-in chat connection. Frames that arrive while it waits for an answer are kept, in
/// order, for [`ChatClient::next_message`].
pub struct ChatClient {
    /// The socket.
    pub ws: WsClient,
    /// The uid from the welcome frame.
    pub uid: String,
    pending: VecDeque<Value>,
    next_cid: u64,
}

impl ChatClient {
    /// Connects to `url` (with its `?uid=` or `?token=`) and reads the welcome frame.
    pub async fn connect(url: &str) -> Result<ChatClient> {
        ChatClient::welcomed(WsClient::connect(url).await?).await
    }

    /// Connects to a `wss://` URL trusting `tls`'s CA, and reads the welcome frame.
    pub async fn connect_tls(url: &str, tls: &crate::TestTls) -> Result<ChatClient> {
        ChatClient::welcomed(WsClient::connect_tls(url, tls).await?).await
    }

    /// Reads the welcome frame of a connected socket.
    async fn welcomed(mut ws: WsClient) -> Result<ChatClient> {
        let welcome = ws.recv_json().await?;
        if welcome["type"] != "welcome" {
            bail!("expected a welcome, got {welcome}");
        }
        let uid = welcome["uid"]
            .as_str()
            .ok_or_else(|| anyhow!("welcome without uid"))?
            .to_owned();
        Ok(ChatClient {
            ws,
            uid,
            pending: VecDeque::new(),
            next_cid: 1,
        })
    }

    /// Connects as `uid` in insecure dev mode on `ws_url` (`ws://…/ws`).
    pub async fn connect_as(ws_url: &str, uid: &str) -> Result<ChatClient> {
        ChatClient::connect(&format!("{ws_url}?uid={uid}")).await
    }

    /// Connects, returning the handshake refusal instead of failing.
    pub async fn try_connect(url: &str) -> Result<std::result::Result<ChatClient, Refusal>> {
        match WsClient::try_connect(url).await? {
            Ok(ws) => Ok(Ok(ChatClient::welcomed(ws).await?)),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    /// A fresh client message id.
    pub fn cid(&mut self) -> String {
        self.next_cid += 1;
        format!("{}-{}", self.uid, self.next_cid)
    }

    /// Sends a raw frame.
    pub async fn send_raw(&mut self, frame: &Value) -> Result<()> {
        self.ws.send_json(frame).await
    }

    /// Sends a direct message with `cid` and waits for its ack (or error).
    pub async fn send_to(&mut self, to: &str, text: &str, cid: &str) -> Result<Value> {
        self.send_raw(&json!({"type": "send", "to": to, "text": text, "cid": cid}))
            .await?;
        self.answer_for(cid).await
    }

    /// Sends a group message with `cid` and waits for its ack (or error).
    pub async fn send_to_group(&mut self, group: &str, text: &str, cid: &str) -> Result<Value> {
        self.send_raw(&json!({"type": "send", "group": group, "text": text, "cid": cid}))
            .await?;
        self.answer_for(cid).await
    }

    /// Sends a request with a fresh `cid` and returns its answer (or error frame).
    pub async fn request(&mut self, mut frame: Value) -> Result<Value> {
        let cid = self.cid();
        frame["cid"] = json!(cid);
        self.send_raw(&frame).await?;
        self.answer_for(&cid).await
    }

    /// Waits for the answer carrying `cid`, keeping pushed messages for later.
    pub async fn answer_for(&mut self, cid: &str) -> Result<Value> {
        Ok(self.sized_answer_for(cid).await?.0)
    }

    /// Sends a request with a fresh `cid` and returns its answer and the answer frame's size in
    /// bytes (for tests of the reply budget).
    pub async fn request_sized(&mut self, mut frame: Value) -> Result<(Value, usize)> {
        let cid = self.cid();
        frame["cid"] = json!(cid);
        self.send_raw(&frame).await?;
        self.sized_answer_for(&cid).await
    }

    async fn sized_answer_for(&mut self, cid: &str) -> Result<(Value, usize)> {
        loop {
            let text = self.ws.recv_text().await?;
            let frame: Value = serde_json::from_str(&text).map_err(|e| anyhow!("not json ({e}): {text}"))?;
            if frame["cid"] == json!(cid) && frame["type"] != "message" {
                return Ok((frame, text.len()));
            }
            self.pending.push_back(frame);
        }
    }

    /// The next frame of type `kind` (from the frames kept while waiting for answers first).
    pub async fn next_of(&mut self, kind: &str) -> Result<Value> {
        if let Some(at) = self.pending.iter().position(|f| f["type"] == kind) {
            return Ok(self.pending.remove(at).expect("position is in range"));
        }
        loop {
            let frame = self.ws.recv_json().await?;
            if frame["type"] == kind {
                return Ok(frame);
            }
            self.pending.push_back(frame);
        }
    }

    /// Every pushed `message` up to and including the one with text `marker`, in arrival order
    /// (earlier kept frames first). The positive form of "nothing else arrived": a message that
    /// would have been pushed before the marker is in the list.
    pub async fn messages_until(&mut self, marker: &str) -> Result<Vec<Value>> {
        let mut seen = Vec::new();
        loop {
            let message = self.next_message().await?;
            let done = message["text"] == marker;
            seen.push(message);
            if done {
                return Ok(seen);
            }
        }
    }

    /// The next pushed `message` frame.
    pub async fn next_message(&mut self) -> Result<Value> {
        self.next_of("message").await
    }

    /// Asserts that no message is pushed within `quiet`.
    pub async fn expect_no_message(&mut self, quiet: Duration) -> Result<()> {
        if let Some(frame) = self.pending.iter().find(|f| f["type"] == "message") {
            bail!("unexpected message {frame}");
        }
        self.ws.expect_silence(quiet).await
    }

    /// Catches up from `cursors`, following `more`, and returns every message received (with
    /// the largest window, so nothing is left out of conversations up to 1,000 events behind).
    pub async fn sync_all(&mut self, cursors: &mut serde_json::Map<String, Value>) -> Result<Vec<Value>> {
        self.sync_window(cursors, 1000).await
    }

    /// Catches up from `cursors` with at most `window` events per conversation, following
    /// `more` and storing each reported conversation's `cursor`; returns the events received.
    pub async fn sync_window(
        &mut self,
        cursors: &mut serde_json::Map<String, Value>,
        window: u32,
    ) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        loop {
            let answer = self
                .request(json!({"type": "sync", "cursors": cursors.clone(), "limit": 7, "window": window}))
                .await?;
            if answer["type"] != "sync" {
                bail!("sync failed: {answer}");
            }
            for message in answer["messages"].as_array().cloned().unwrap_or_default() {
                let conversation = message["conversation"].as_str().unwrap_or_default().to_owned();
                cursors.insert(conversation, message["seq"].clone());
                all.push(message);
            }
            for entry in answer["conversations"].as_array().cloned().unwrap_or_default() {
                if let Some(id) = entry["id"].as_str() {
                    cursors.insert(id.to_owned(), entry["cursor"].clone());
                }
            }
            if answer["more"] != json!(true) {
                return Ok(all);
            }
        }
    }
}
