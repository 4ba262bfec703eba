//! [`ChatClient`]: a client of the chat protocol (`docs/protocol.md`), as an app would write one.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};

use crate::client::{Refusal, WsClient};

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
        let mut ws = WsClient::connect(url).await?;
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
            Ok(_) => Ok(Ok(ChatClient::connect(url).await?)),
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
        loop {
            let frame = self.ws.recv_json().await?;
            if frame["cid"] == json!(cid) && frame["type"] != "message" {
                return Ok(frame);
            }
            self.pending.push_back(frame);
        }
    }

    /// The next pushed `message` frame.
    pub async fn next_message(&mut self) -> Result<Value> {
        while let Some(frame) = self.pending.pop_front() {
            if frame["type"] == "message" {
                return Ok(frame);
            }
        }
        loop {
            let frame = self.ws.recv_json().await?;
            if frame["type"] == "message" {
                return Ok(frame);
            }
        }
    }

    /// Asserts that no message is pushed within `quiet`.
    pub async fn expect_no_message(&mut self, quiet: Duration) -> Result<()> {
        if let Some(frame) = self.pending.iter().find(|f| f["type"] == "message") {
            bail!("unexpected message {frame}");
        }
        self.ws.expect_silence(quiet).await
    }

    /// Catches up from `cursors`, following `more`, and returns every message received.
    pub async fn sync_all(&mut self, cursors: &mut serde_json::Map<String, Value>) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        loop {
            let answer = self
                .request(json!({"type": "sync", "cursors": cursors.clone(), "limit": 7}))
                .await?;
            if answer["type"] != "sync" {
                bail!("sync failed: {answer}");
            }
            for message in answer["messages"].as_array().cloned().unwrap_or_default() {
                let conversation = message["conversation"].as_str().unwrap_or_default().to_owned();
                cursors.insert(conversation, message["seq"].clone());
                all.push(message);
            }
            if answer["more"] != json!(true) {
                return Ok(all);
            }
        }
    }
}
