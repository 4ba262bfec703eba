//! The server API (`gatehouse api`) end to end: a registry, two gateways, an `api`-app worker
//! (whose WebSocket clients learn their own client ids) and an API process, all real
//! processes. Every operation is called over HTTP and over gRPC, and what the WebSocket clients
//! receive proves the effect.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use gatehouse_proto::tonic::transport::Channel;
use gatehouse_proto::tonic::{Code, Request};
use gatehouse_proto::v1::server_api_client::ServerApiClient;
use gatehouse_proto::v1::{self as pb, batch_operation, batch_result};
use gatehouse_testkit::api_server::ApiServer;
use gatehouse_testkit::client::Refusal;
use gatehouse_testkit::{ApiClient, Cluster, Service, require};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const KEYS: &[(&str, &str)] = &[("admin", "admin"), ("publisher", "publish"), ("reader", "query")];

async fn cluster() -> Result<Cluster> {
    Cluster::builder().gateways(2).workers("api", 1).start().await
}

async fn api(cluster: &Cluster, extra: &[&str]) -> Result<ApiServer> {
    ApiServer::start(cluster, KEYS, extra).await
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Receives the next data frame of a client: its text, or `binary:<hex>`.
async fn next_frame(client: &mut ApiClient) -> Result<String> {
    if !client.inbox.is_empty() {
        return Ok(client.inbox.remove(0));
    }
    match client.ws.recv_within(Duration::from_secs(10)).await? {
        Ok(Message::Text(text)) => Ok(text.to_string()),
        Ok(Message::Binary(bytes)) => Ok(format!(
            "binary:{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )),
        Ok(other) => bail!("unexpected {other:?}"),
        Err(refusal) => bail!("connection ended: {refusal:?}"),
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_over_http_across_two_gateways() -> Result<()> {
    // On the heap: the test's future is larger than the test thread's stack.
    Box::pin(every_http_operation()).await
}

async fn every_http_operation() -> Result<()> {
    let cluster = cluster().await?;
    let api = api(&cluster, &[]).await?;
    let mut a = ApiClient::connect(&cluster.ws_url(0)).await?;
    let mut b = ApiClient::connect(&cluster.ws_url(1)).await?;
    let mut c = ApiClient::connect(&cluster.ws_url(1)).await?;
    let (ida, idb, idc) = (a.client_id.clone(), b.client_id.clone(), c.client_id.clone());

    // Bindings and groups (admin).
    for (id, uid) in [(&ida, "alice"), (&idb, "bob"), (&idc, "bob")] {
        assert_eq!(
            api.ok("bind_uid", "admin", json!({"client": id, "uid": uid})).await?,
            json!({})
        );
    }
    for id in [&ida, &idb] {
        api.ok("join_group", "admin", json!({"client": id, "group": "room"}))
            .await?;
    }

    Box::pin(http_sends(&api, &mut a, &mut b, &mut c)).await?;
    Box::pin(http_queries(&api, &ida, &idb, &idc)).await?;
    Box::pin(http_sessions_and_undoing(&api, &ida, &idb, &idc)).await?;
    Box::pin(http_closes(&api, a, b, c)).await
}

/// Sends (publish), each proved by what arrives, exclusions by a later marker arriving first.
async fn http_sends(api: &ApiServer, a: &mut ApiClient, b: &mut ApiClient, c: &mut ApiClient) -> Result<()> {
    let (ida, idb, idc) = (a.client_id.clone(), b.client_id.clone(), c.client_id.clone());
    let sent = json!({"replayed": false});
    assert_eq!(
        api.ok("send_to_client", "publisher", json!({"client": ida, "data": "one"}))
            .await?,
        sent
    );
    assert_eq!(next_frame(a).await?, "one");
    api.ok(
        "send_to_clients",
        "publisher",
        json!({"clients": [ida, idb], "data": "two"}),
    )
    .await?;
    assert_eq!(next_frame(a).await?, "two");
    assert_eq!(next_frame(b).await?, "two");
    api.ok(
        "send_to_uid",
        "publisher",
        json!({"uid": "bob", "data": "not c", "exclude": [idc]}),
    )
    .await?;
    api.ok("send_to_uid", "publisher", json!({"uid": "bob", "data": "bob marker"}))
        .await?;
    assert_eq!(next_frame(b).await?, "not c");
    assert_eq!(next_frame(b).await?, "bob marker");
    assert_eq!(next_frame(c).await?, "bob marker", "the excluded client got the send");
    api.ok(
        "send_to_uids",
        "publisher",
        json!({"uids": ["alice", "bob"], "data_base64": "AAEC"}),
    )
    .await?;
    for client in [&mut *a, &mut *b, &mut *c] {
        assert_eq!(next_frame(client).await?, "binary:000102");
    }
    api.ok(
        "send_to_group",
        "publisher",
        json!({"group": "room", "data": "room", "exclude": [ida]}),
    )
    .await?;
    assert_eq!(next_frame(b).await?, "room");
    api.ok(
        "send_to_groups",
        "publisher",
        json!({"groups": ["room", "nobody"], "data": "rooms"}),
    )
    .await?;
    assert_eq!(
        next_frame(a).await?,
        "rooms",
        "a was excluded from the previous send only"
    );
    assert_eq!(next_frame(b).await?, "rooms");
    api.ok("send_to_all", "publisher", json!({"data": "all", "exclude": [idb]}))
        .await?;
    assert_eq!(next_frame(a).await?, "all");
    assert_eq!(next_frame(c).await?, "all");
    api.ok(
        "send_to_client",
        "publisher",
        json!({"client": idb, "data": "b marker"}),
    )
    .await?;
    assert_eq!(next_frame(b).await?, "b marker", "the excluded client got send_to_all");
    Ok(())
}

/// Presence, lookups, lists and counts (query).
async fn http_queries(api: &ApiServer, ida: &str, idb: &str, idc: &str) -> Result<()> {
    let (ida, idb, idc) = (ida.to_owned(), idb.to_owned(), idc.to_owned());
    let q = async |op: &str, body: Value| api.ok(op, "reader", body).await;
    assert_eq!(q("is_online", json!({"client": ida})).await?, json!({"online": true}));
    assert_eq!(
        q("is_uid_online", json!({"uid": "bob"})).await?,
        json!({"online": true})
    );
    assert_eq!(
        q("is_uid_online", json!({"uid": "zed"})).await?,
        json!({"online": false})
    );
    assert_eq!(
        q("online_uids", json!({"uids": ["zed", "bob", "alice"]})).await?,
        json!({"uids": ["alice", "bob"]})
    );
    let bobs = sorted(vec![idb.clone(), idc.clone()]);
    assert_eq!(
        q("client_ids_by_uid", json!({"uid": "bob"})).await?,
        json!({"client_ids": bobs})
    );
    assert_eq!(
        q("client_ids_by_uids", json!({"uids": ["alice", "bob", "zed"]})).await?,
        json!({"client_ids_by_uid": {"alice": [ida], "bob": bobs}})
    );
    assert_eq!(q("uid_of", json!({"client": ida})).await?, json!({"uid": "alice"}));
    let everyone = sorted(vec![ida.clone(), idb.clone(), idc.clone()]);
    assert_eq!(q("all_client_ids", json!({})).await?, json!({"client_ids": everyone}));
    assert_eq!(q("all_client_count", json!({})).await?, json!({"count": 3}));
    assert_eq!(q("all_uids", json!({})).await?, json!({"uids": ["alice", "bob"]}));
    assert_eq!(q("all_uid_count", json!({})).await?, json!({"count": 2}));
    assert_eq!(q("all_groups", json!({})).await?, json!({"groups": ["room"]}));
    let room = sorted(vec![ida.clone(), idb.clone()]);
    assert_eq!(
        q("group_client_ids", json!({"group": "room"})).await?,
        json!({"client_ids": room})
    );
    assert_eq!(
        q("group_client_count", json!({"group": "room"})).await?,
        json!({"count": 2})
    );
    assert_eq!(
        q("group_client_counts", json!({"groups": ["room", "empty"]})).await?,
        json!({"counts": {"room": 2, "empty": 0}})
    );
    assert_eq!(
        q("group_uids", json!({"group": "room"})).await?,
        json!({"uids": ["alice", "bob"]})
    );
    assert_eq!(
        q("group_uid_count", json!({"group": "room"})).await?,
        json!({"count": 2})
    );
    Ok(())
}

/// Sessions (writes need admin, reads query), then undoing bindings and groups.
async fn http_sessions_and_undoing(api: &ApiServer, ida: &str, idb: &str, idc: &str) -> Result<()> {
    let (ida, idb, idc) = (ida.to_owned(), idb.to_owned(), idc.to_owned());
    let q = async |op: &str, body: Value| api.ok(op, "reader", body).await;
    api.ok(
        "set_session",
        "admin",
        json!({"client": ida, "session": {"plan": "pro", "n": 1}}),
    )
    .await?;
    api.ok("update_session", "admin", json!({"client": ida, "session": {"n": 2}}))
        .await?;
    api.ok(
        "set_session",
        "admin",
        json!({"client": idb, "session": {"plan": "free"}}),
    )
    .await?;
    assert_eq!(
        q("get_session", json!({"client": ida})).await?,
        json!({"session": {"plan": "pro", "n": 2}})
    );
    let all = q("all_sessions", json!({})).await?;
    assert_eq!(all["sessions"][&ida], json!({"plan": "pro", "n": 2}));
    assert_eq!(all["sessions"][&idb], json!({"plan": "free"}));
    assert_eq!(all["sessions"][&idc], json!({}));
    let room_sessions = q("group_sessions", json!({"group": "room"})).await?;
    assert_eq!(room_sessions["sessions"].as_object().map(|m| m.len()), Some(2));

    // Undoing bindings and groups.
    api.ok("unbind_uid", "admin", json!({"client": idc, "uid": "bob"}))
        .await?;
    assert_eq!(
        q("client_ids_by_uid", json!({"uid": "bob"})).await?,
        json!({"client_ids": [idb]})
    );
    assert_eq!(q("uid_of", json!({"client": idc})).await?, json!({"uid": null}));
    api.ok("leave_group", "admin", json!({"client": idb, "group": "room"}))
        .await?;
    assert_eq!(
        q("group_client_ids", json!({"group": "room"})).await?,
        json!({"client_ids": [ida]})
    );
    api.ok("ungroup", "admin", json!({"group": "room"})).await?;
    assert_eq!(q("all_groups", json!({})).await?, json!({"groups": []}));
    Ok(())
}

/// Deadlines, closes and destroys (publish).
async fn http_closes(api: &ApiServer, mut a: ApiClient, mut b: ApiClient, mut c: ApiClient) -> Result<()> {
    let (ida, idb, idc) = (a.client_id.clone(), b.client_id.clone(), c.client_id.clone());
    let q = async |op: &str, body: Value| api.ok(op, "reader", body).await;
    api.ok(
        "set_deadline",
        "publisher",
        json!({"client": idc, "deadline": {"at_ms": now_ms() + 1500, "warn_before_ms": 1000,
               "data": "expiring", "close_code": 4001, "close_reason": "token expired"}}),
    )
    .await?;
    assert_eq!(next_frame(&mut c).await?, "expiring");
    assert_eq!(c.ws.expect_close_frame().await?, (4001, "token expired".to_owned()));
    api.ok(
        "close_client",
        "publisher",
        json!({"client": idb, "data": "bye", "code": 4000, "reason": "done"}),
    )
    .await?;
    assert_eq!(next_frame(&mut b).await?, "bye");
    assert_eq!(b.ws.expect_close_frame().await?, (4000, "done".to_owned()));
    api.ok("destroy_client", "publisher", json!({"client": ida})).await?;
    assert!(matches!(
        a.ws.recv_within(Duration::from_secs(10)).await?,
        Err(Refusal::Closed(_))
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while q("all_client_count", json!({})).await? != json!({"count": 0}) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "closed clients are still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(q("is_online", json!({"client": ida})).await?, json!({"online": false}));
    Ok(())
}

async fn grpc(api: &ApiServer) -> Result<ServerApiClient<Channel>> {
    Ok(ServerApiClient::connect(format!("http://{}", api.grpc_addr())).await?)
}

fn req<T>(api: &ApiServer, key: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", api.key(key)).parse().expect("ascii"),
    );
    request
}

fn text_uid(text: &str) -> Option<pb::send_to_uid_request::Data> {
    Some(pb::send_to_uid_request::Data::Text(text.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_over_grpc_across_two_gateways() -> Result<()> {
    Box::pin(every_grpc_operation()).await
}

async fn every_grpc_operation() -> Result<()> {
    let cluster = cluster().await?;
    let api = api(&cluster, &[]).await?;
    let mut g = grpc(&api).await?;
    let mut a = ApiClient::connect(&cluster.ws_url(0)).await?;
    let mut b = ApiClient::connect(&cluster.ws_url(1)).await?;
    let (ida, idb) = (a.client_id.clone(), b.client_id.clone());

    g.bind_uid(req(
        &api,
        "admin",
        pb::BindUidRequest {
            client: ida.clone(),
            uid: "alice".into(),
        },
    ))
    .await?;
    g.bind_uid(req(
        &api,
        "admin",
        pb::BindUidRequest {
            client: idb.clone(),
            uid: "bob".into(),
        },
    ))
    .await?;
    g.join_group(req(
        &api,
        "admin",
        pb::JoinGroupRequest {
            client: ida.clone(),
            group: "room".into(),
        },
    ))
    .await?;
    g.join_group(req(
        &api,
        "admin",
        pb::JoinGroupRequest {
            client: idb.clone(),
            group: "room".into(),
        },
    ))
    .await?;

    let sent = g
        .send_to_client(req(
            &api,
            "publisher",
            pb::SendToClientRequest {
                client: ida.clone(),
                data: Some(pb::send_to_client_request::Data::Text("one".into())),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert!(!sent.replayed);
    assert_eq!(next_frame(&mut a).await?, "one");
    g.send_to_clients(req(
        &api,
        "publisher",
        pb::SendToClientsRequest {
            clients: vec![ida.clone(), idb.clone()],
            data: Some(pb::send_to_clients_request::Data::Binary(vec![7, 8].into())),
            ..Default::default()
        },
    ))
    .await?;
    assert_eq!(next_frame(&mut a).await?, "binary:0708");
    assert_eq!(next_frame(&mut b).await?, "binary:0708");
    g.send_to_uid(req(
        &api,
        "publisher",
        pb::SendToUidRequest {
            uid: "bob".into(),
            data: text_uid("to bob"),
            ..Default::default()
        },
    ))
    .await?;
    assert_eq!(next_frame(&mut b).await?, "to bob");
    g.send_to_uids(req(
        &api,
        "publisher",
        pb::SendToUidsRequest {
            uids: vec!["alice".into(), "bob".into()],
            data: Some(pb::send_to_uids_request::Data::Text("uids".into())),
            exclude: vec![idb.clone()],
            ..Default::default()
        },
    ))
    .await?;
    assert_eq!(next_frame(&mut a).await?, "uids");
    g.send_to_group(req(
        &api,
        "publisher",
        pb::SendToGroupRequest {
            group: "room".into(),
            data: Some(pb::send_to_group_request::Data::Text("group".into())),
            exclude: vec![ida.clone()],
            ..Default::default()
        },
    ))
    .await?;
    assert_eq!(
        next_frame(&mut b).await?,
        "group",
        "b was excluded from send_to_uids only"
    );
    g.send_to_groups(req(
        &api,
        "publisher",
        pb::SendToGroupsRequest {
            groups: vec!["room".into()],
            data: Some(pb::send_to_groups_request::Data::Text("groups".into())),
            ..Default::default()
        },
    ))
    .await?;
    assert_eq!(
        next_frame(&mut a).await?,
        "groups",
        "a was excluded from send_to_group only"
    );
    assert_eq!(next_frame(&mut b).await?, "groups");
    g.send_to_all(req(
        &api,
        "publisher",
        pb::SendToAllRequest {
            data: Some(pb::send_to_all_request::Data::Text("all".into())),
            ..Default::default()
        },
    ))
    .await?;
    assert_eq!(next_frame(&mut a).await?, "all");
    assert_eq!(next_frame(&mut b).await?, "all");

    let online = g
        .is_online(req(&api, "reader", pb::IsOnlineRequest { client: ida.clone() }))
        .await?;
    assert!(online.into_inner().online);
    let uid_online = g
        .is_uid_online(req(&api, "reader", pb::IsUidOnlineRequest { uid: "zed".into() }))
        .await?;
    assert!(!uid_online.into_inner().online);
    let uids = g
        .online_uids(req(
            &api,
            "reader",
            pb::OnlineUidsRequest {
                uids: vec!["bob".into(), "zed".into()],
            },
        ))
        .await?;
    assert_eq!(uids.into_inner().uids, ["bob"]);
    let ids = g
        .client_ids_by_uid(req(&api, "reader", pb::ClientIdsByUidRequest { uid: "bob".into() }))
        .await?;
    assert_eq!(ids.into_inner().client_ids, std::slice::from_ref(&idb));
    let by_uid = g
        .client_ids_by_uids(req(
            &api,
            "reader",
            pb::ClientIdsByUidsRequest {
                uids: vec!["alice".into(), "zed".into()],
            },
        ))
        .await?
        .into_inner()
        .client_ids_by_uid;
    assert_eq!(by_uid.len(), 1);
    assert_eq!(by_uid["alice"].client_ids, std::slice::from_ref(&ida));
    let uid = g
        .uid_of(req(&api, "reader", pb::UidOfRequest { client: idb.clone() }))
        .await?;
    assert_eq!(uid.into_inner().uid.as_deref(), Some("bob"));
    let all = g
        .all_client_ids(req(&api, "reader", pb::AllClientIdsRequest {}))
        .await?;
    assert_eq!(all.into_inner().client_ids, sorted(vec![ida.clone(), idb.clone()]));
    let count = g
        .all_client_count(req(&api, "reader", pb::AllClientCountRequest {}))
        .await?;
    assert_eq!(count.into_inner().count, 2);
    let all_uids = g.all_uids(req(&api, "reader", pb::AllUidsRequest {})).await?;
    assert_eq!(all_uids.into_inner().uids, ["alice", "bob"]);
    let uid_count = g.all_uid_count(req(&api, "reader", pb::AllUidCountRequest {})).await?;
    assert_eq!(uid_count.into_inner().count, 2);
    let groups = g.all_groups(req(&api, "reader", pb::AllGroupsRequest {})).await?;
    assert_eq!(groups.into_inner().groups, ["room"]);
    let members = g
        .group_client_ids(req(&api, "reader", pb::GroupClientIdsRequest { group: "room".into() }))
        .await?;
    assert_eq!(members.into_inner().client_ids, sorted(vec![ida.clone(), idb.clone()]));
    let member_count = g
        .group_client_count(req(
            &api,
            "reader",
            pb::GroupClientCountRequest { group: "room".into() },
        ))
        .await?;
    assert_eq!(member_count.into_inner().count, 2);
    let counts = g
        .group_client_counts(req(
            &api,
            "reader",
            pb::GroupClientCountsRequest {
                groups: vec!["room".into(), "empty".into()],
            },
        ))
        .await?
        .into_inner()
        .counts;
    assert_eq!(counts, HashMap::from([("room".to_owned(), 2), ("empty".to_owned(), 0)]));
    let group_uids = g
        .group_uids(req(&api, "reader", pb::GroupUidsRequest { group: "room".into() }))
        .await?;
    assert_eq!(group_uids.into_inner().uids, ["alice", "bob"]);
    let group_uid_count = g
        .group_uid_count(req(&api, "reader", pb::GroupUidCountRequest { group: "room".into() }))
        .await?;
    assert_eq!(group_uid_count.into_inner().count, 2);

    g.set_session(req(
        &api,
        "admin",
        pb::SetSessionRequest {
            client: ida.clone(),
            session: r#"{"plan":"pro"}"#.into(),
        },
    ))
    .await?;
    g.update_session(req(
        &api,
        "admin",
        pb::UpdateSessionRequest {
            client: ida.clone(),
            session: r#"{"n":1}"#.into(),
        },
    ))
    .await?;
    let session = g
        .get_session(req(&api, "reader", pb::GetSessionRequest { client: ida.clone() }))
        .await?;
    let session: Value = serde_json::from_str(&session.into_inner().session.expect("a's session"))?;
    assert_eq!(session, json!({"plan": "pro", "n": 1}));
    let sessions = g
        .all_sessions(req(&api, "reader", pb::AllSessionsRequest {}))
        .await?
        .into_inner()
        .sessions;
    assert_eq!(
        serde_json::from_str::<Value>(&sessions[&ida])?,
        json!({"plan": "pro", "n": 1})
    );
    let room = g
        .group_sessions(req(&api, "reader", pb::GroupSessionsRequest { group: "room".into() }))
        .await?
        .into_inner()
        .sessions;
    assert_eq!(room.len(), 2);

    g.unbind_uid(req(
        &api,
        "admin",
        pb::UnbindUidRequest {
            client: idb.clone(),
            uid: "bob".into(),
        },
    ))
    .await?;
    let uid = g
        .uid_of(req(&api, "reader", pb::UidOfRequest { client: idb.clone() }))
        .await?;
    assert_eq!(uid.into_inner().uid, None);
    g.leave_group(req(
        &api,
        "admin",
        pb::LeaveGroupRequest {
            client: idb.clone(),
            group: "room".into(),
        },
    ))
    .await?;
    g.ungroup(req(&api, "admin", pb::UngroupRequest { group: "room".into() }))
        .await?;
    let groups = g.all_groups(req(&api, "reader", pb::AllGroupsRequest {})).await?;
    assert!(groups.into_inner().groups.is_empty());

    g.set_deadline(req(
        &api,
        "publisher",
        pb::SetDeadlineRequest {
            client: idb.clone(),
            deadline: Some(pb::ClientDeadline {
                at_ms: now_ms() + 1500,
                warn_before_ms: 1000,
                warning: Some(pb::client_deadline::Warning::Text("expiring".into())),
                close_code: 4001,
                close_reason: "token expired".into(),
            }),
        },
    ))
    .await?;
    assert_eq!(next_frame(&mut b).await?, "expiring");
    assert_eq!(b.ws.expect_close_frame().await?, (4001, "token expired".to_owned()));
    let mut c = ApiClient::connect(&cluster.ws_url(1)).await?;
    g.close_client(req(
        &api,
        "publisher",
        pb::CloseClientRequest {
            client: ida.clone(),
            last: Some(pb::close_client_request::Last::Text("bye".into())),
            code: 4000,
            reason: "done".into(),
        },
    ))
    .await?;
    assert_eq!(next_frame(&mut a).await?, "bye");
    assert_eq!(a.ws.expect_close_frame().await?, (4000, "done".to_owned()));
    g.destroy_client(req(
        &api,
        "publisher",
        pb::DestroyClientRequest {
            client: c.client_id.clone(),
        },
    ))
    .await?;
    assert!(matches!(
        c.ws.recv_within(Duration::from_secs(10)).await?,
        Err(Refusal::Closed(_))
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_in_order_and_answers_each_operation() -> Result<()> {
    let cluster = cluster().await?;
    let api = api(&cluster, &["--max-batch-ops", "5"]).await?;
    let mut a = ApiClient::connect(&cluster.ws_url(0)).await?;
    let ida = a.client_id.clone();
    // Same gateway as `a`, but a connection number that does not exist.
    let ghost = format!("{}ffffffffffffffff", &ida[..16]);
    let batch = json!({"ops": [
        {"op": "bind_uid", "client": ida, "uid": "alice"},
        {"op": "send_to_uid", "uid": "alice", "data": "first"},
        {"op": "set_session", "client": ghost, "session": {}},
        {"op": "is_uid_online", "uid": "alice"},
        {"op": "send_to_client", "client": ida, "data": "second", "idempotency_key": "b-1"},
    ]});
    let response = api.post("/api/v1/batch", Some("admin"), &batch).await?;
    assert_eq!(response.status, 200, "{}", response.text());
    let results = response.json()?["results"].clone();
    assert_eq!(results[0], json!({"result": {}}));
    assert_eq!(results[1], json!({"result": {"replayed": false}}));
    assert_eq!(results[2]["error"]["code"], "not_found", "{results}");
    assert_eq!(results[3], json!({"result": {"online": true}}));
    assert_eq!(results[4], json!({"result": {"replayed": false}}));
    assert_eq!(next_frame(&mut a).await?, "first");
    assert_eq!(next_frame(&mut a).await?, "second");

    // A malformed batch runs nothing: the bind before the bad item does not happen.
    let bad = json!({"ops": [
        {"op": "bind_uid", "client": ida, "uid": "mallory"},
        {"op": "send_to_uid", "uid": "alice"},
    ]});
    let response = api.post("/api/v1/batch", Some("admin"), &bad).await?;
    assert_eq!(response.status, 400);
    assert!(response.text().contains("ops[1]"), "{}", response.text());
    assert_eq!(
        api.ok("uid_of", "reader", json!({"client": ida})).await?,
        json!({"uid": "alice"})
    );
    // So does a batch with an operation the key may not run, and one that is too long.
    let forbidden =
        json!({"ops": [{"op": "send_to_uid", "uid": "alice", "data": "x"}, {"op": "ungroup", "group": "g"}]});
    let response = api.post("/api/v1/batch", Some("publisher"), &forbidden).await?;
    assert_eq!(response.status, 403);
    assert_eq!(response.json()?["error"]["code"], "unauthenticated");
    let long = json!({"ops": vec![json!({"op": "all_groups"}); 6]});
    let response = api.post("/api/v1/batch", Some("admin"), &long).await?;
    assert_eq!(response.status, 400);
    assert!(response.text().contains("at most 5"), "{}", response.text());
    for op in ["{\"op\": \"drop_table\"}", "[1]", "{\"uid\": \"x\"}"] {
        let body = format!("{{\"ops\": [{op}]}}");
        let response = api
            .post_raw("/api/v1/batch", Some("admin"), &[], body.as_bytes())
            .await?;
        assert_eq!(response.status, 400, "{op}: {}", response.text());
        assert_eq!(response.json()?["error"]["code"], "bad_request");
    }

    // The same over gRPC.
    let mut g = grpc(&api).await?;
    let ops = vec![
        pb::BatchOperation {
            op: Some(batch_operation::Op::SendToUid(pb::SendToUidRequest {
                uid: "alice".into(),
                data: text_uid("third"),
                ..Default::default()
            })),
        },
        pb::BatchOperation {
            op: Some(batch_operation::Op::IsOnline(pb::IsOnlineRequest {
                client: ghost.clone(),
            })),
        },
        pb::BatchOperation {
            op: Some(batch_operation::Op::AllUidCount(pb::AllUidCountRequest {})),
        },
    ];
    let results = g
        .batch(req(&api, "admin", pb::BatchRequest { ops }))
        .await?
        .into_inner()
        .results;
    assert!(matches!(
        results[0].result,
        Some(batch_result::Result::SendToUid(pb::SendToUidResponse {
            replayed: false
        }))
    ));
    assert!(matches!(
        results[1].result,
        Some(batch_result::Result::IsOnline(pb::IsOnlineResponse { online: false }))
    ));
    assert!(matches!(
        results[2].result,
        Some(batch_result::Result::AllUidCount(pb::AllUidCountResponse { count: 1 }))
    ));
    assert_eq!(next_frame(&mut a).await?, "third");
    let empty_op = vec![pb::BatchOperation { op: None }];
    let status = g
        .batch(req(&api, "admin", pb::BatchRequest { ops: empty_op }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_resend_is_not_delivered_twice() -> Result<()> {
    let cluster = cluster().await?;
    let api = api(&cluster, &[]).await?;
    let mut a = ApiClient::connect(&cluster.ws_url(1)).await?;
    api.ok("bind_uid", "admin", json!({"client": a.client_id, "uid": "alice"}))
        .await?;
    let send = json!({"uid": "alice", "data": "pay 10"});
    let header = [("idempotency-key", "order-17")];
    let first = api
        .post_raw(
            "/api/v1/send_to_uid",
            Some("publisher"),
            &header,
            send.to_string().as_bytes(),
        )
        .await?;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()?, json!({"result": {"replayed": false}}));
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = api
        .post_raw(
            "/api/v1/send_to_uid",
            Some("publisher"),
            &header,
            send.to_string().as_bytes(),
        )
        .await?;
    assert_eq!(again.json()?, json!({"result": {"replayed": true}}));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // The key in the body is the same key.
    let in_body = json!({"uid": "alice", "data": "pay 10", "idempotency_key": "order-17"});
    assert_eq!(
        api.ok("send_to_uid", "publisher", in_body).await?,
        json!({"replayed": true})
    );
    // The same key for another request is refused, not answered with the first result.
    let other = json!({"uid": "alice", "data": "pay 99"});
    let conflict = api
        .post_raw(
            "/api/v1/send_to_uid",
            Some("publisher"),
            &header,
            other.to_string().as_bytes(),
        )
        .await?;
    assert_eq!(conflict.status, 400);
    assert!(conflict.text().contains("different request"), "{}", conflict.text());
    // Another key's key space is its own.
    let admin_send = api
        .post_raw(
            "/api/v1/send_to_uid",
            Some("admin"),
            &header,
            send.to_string().as_bytes(),
        )
        .await?;
    assert_eq!(admin_send.json()?, json!({"result": {"replayed": false}}));
    // Over gRPC too.
    let mut g = grpc(&api).await?;
    for expected in [false, true] {
        let response = g
            .send_to_uid(req(
                &api,
                "publisher",
                pb::SendToUidRequest {
                    uid: "alice".into(),
                    data: text_uid("grpc once"),
                    idempotency_key: "order-18".into(),
                    ..Default::default()
                },
            ))
            .await?;
        assert_eq!(response.into_inner().replayed, expected);
    }
    api.ok("send_to_uid", "publisher", json!({"uid": "alice", "data": "marker"}))
        .await?;
    // What arrived: one copy per accepted send, then the marker; no repeat before it.
    assert_eq!(next_frame(&mut a).await?, "pay 10");
    assert_eq!(next_frame(&mut a).await?, "pay 10", "the admin key's send is its own");
    assert_eq!(next_frame(&mut a).await?, "grpc once");
    assert_eq!(next_frame(&mut a).await?, "marker");
    // An idempotency key on an operation that is no send is refused.
    let bind = api
        .post_raw(
            "/api/v1/bind_uid",
            Some("admin"),
            &header,
            json!({"client": a.client_id, "uid": "x"}).to_string().as_bytes(),
        )
        .await?;
    assert_eq!(bind.status, 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scopes_and_bad_requests_get_typed_errors_and_the_process_keeps_serving() -> Result<()> {
    let cluster = cluster().await?;
    let mut api = api(&cluster, &["--max-body-bytes", "4096"]).await?;
    let a = ApiClient::connect(&cluster.ws_url(0)).await?;
    let body = json!({"uid": "alice", "data": "x"});
    let error_of = |r: &gatehouse_testkit::api_server::HttpResponse| -> Result<(u16, String)> {
        let json = r.json()?;
        Ok((r.status, json["error"]["code"].as_str().unwrap_or_default().to_owned()))
    };

    let missing = api.post("/api/v1/send_to_uid", None, &body).await?;
    assert_eq!(error_of(&missing)?, (401, "unauthenticated".into()));
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let wrong = api
        .post_raw(
            "/api/v1/send_to_uid",
            None,
            &[("authorization", "Bearer ghk_wrong")],
            body.to_string().as_bytes(),
        )
        .await?;
    assert_eq!(error_of(&wrong)?, (401, "unauthenticated".into()));
    let basic = api
        .post_raw(
            "/api/v1/send_to_uid",
            None,
            &[("authorization", "Basic eDp5")],
            body.to_string().as_bytes(),
        )
        .await?;
    assert_eq!(error_of(&basic)?, (401, "unauthenticated".into()));
    let reader_sends = api.post("/api/v1/send_to_uid", Some("reader"), &body).await?;
    assert_eq!(error_of(&reader_sends)?, (403, "unauthenticated".into()));
    assert!(reader_sends.text().contains("forbidden"), "{}", reader_sends.text());
    let publisher_binds = api
        .post(
            "/api/v1/bind_uid",
            Some("publisher"),
            &json!({"client": a.client_id, "uid": "u"}),
        )
        .await?;
    assert_eq!(error_of(&publisher_binds)?.0, 403);
    let publisher_reads = api.post("/api/v1/all_groups", Some("publisher"), &json!({})).await?;
    assert_eq!(error_of(&publisher_reads)?.0, 403);

    let bad_bodies: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/api/v1/send_to_uid", b"{\"uid\": ".to_vec(), 400, "bad_request"),
        ("/api/v1/send_to_uid", b"\"a string\"".to_vec(), 400, "bad_request"),
        (
            "/api/v1/send_to_uid",
            br#"{"uid":"a","data":"x","colour":"red"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "/api/v1/send_to_uid",
            br#"{"uid":["a"],"data":"x"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "/api/v1/send_to_uid",
            br#"{"uid":"","data":"x"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "/api/v1/is_online",
            br#"{"client":"not-an-id"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "/api/v1/close_client",
            format!(r#"{{"client":"{}","code":1002}}"#, a.client_id).into_bytes(),
            400,
            "bad_request",
        ),
        ("/api/v1/send_to_uid", vec![b' '; 5000], 413, "bad_request"),
        ("/api/v1/drop_database", b"{}".to_vec(), 404, "not_found"),
        ("/nothing/here", b"{}".to_vec(), 404, "not_found"),
    ];
    for (path, body, status, code) in bad_bodies {
        let response = api.post_raw(path, Some("admin"), &[], &body).await?;
        assert_eq!(
            error_of(&response)?,
            (status, code.to_owned()),
            "{path}: {}",
            response.text()
        );
    }
    let get = gatehouse_testkit::api_server::http_request(
        api.http_addr(),
        "GET",
        "/api/v1/all_groups",
        &[("authorization", &format!("Bearer {}", api.key("admin")))],
        b"",
    )
    .await?;
    assert_eq!(error_of(&get)?, (405, "bad_request".into()));
    assert_eq!(get.header("allow"), Some("POST"));
    // gRPC: the same refusals as statuses.
    let mut g = grpc(&api).await?;
    let send = || pb::SendToUidRequest {
        uid: "alice".into(),
        data: text_uid("x"),
        ..Default::default()
    };
    let status = g.send_to_uid(Request::new(send())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = g.send_to_uid(req(&api, "reader", send())).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = g
        .is_online(req(&api, "reader", pb::IsOnlineRequest { client: "nope".into() }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let huge = pb::SendToUidRequest {
        uid: "alice".into(),
        data: text_uid(&"x".repeat(8192)),
        ..Default::default()
    };
    let status = g.send_to_uid(req(&api, "publisher", huge)).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{status:?}"
    );

    // Still serving, and the refusals were counted.
    assert_eq!(
        api.ok("all_client_count", "reader", json!({})).await?,
        json!({"count": 1})
    );
    let (_, metrics) = gatehouse_testkit::cluster::http_get(api.http_addr(), "/metrics").await?;
    for line in [
        "gatehouse_api_forbidden_total 4",
        "gatehouse_api_too_large_total 1",
        "gatehouse_api_errors_total{code=\"not_found\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    // SIGHUP re-reads the key file: old secrets stop working, new ones work, and a broken
    // file keeps the keys in force.
    let old_reader = api.key("reader").to_owned();
    api.replace_keys(&[("reader", "query")]).await?;
    let stale = api
        .post_raw(
            "/api/v1/all_groups",
            None,
            &[("authorization", &format!("Bearer {old_reader}"))],
            b"{}",
        )
        .await?;
    assert_eq!(stale.status, 401);
    assert_eq!(api.ok("all_groups", "reader", json!({})).await?, json!({"groups": []}));
    api.write_key_file_and_reload("{not json", "api keys not reloaded")
        .await?;
    assert_eq!(api.ok("all_groups", "reader", json!({})).await?, json!({"groups": []}));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_with_retry_after() -> Result<()> {
    let cluster = cluster().await?;
    let api = api(&cluster, &["--key-rate", "1", "--key-burst", "3"]).await?;
    let start = tokio::time::Instant::now();
    let mut allowed = 0;
    let refused = loop {
        let response = api.post("/api/v1/all_uid_count", Some("reader"), &json!({})).await?;
        if response.status != 200 {
            break response;
        }
        allowed += 1;
        assert!(allowed < 20, "20 requests passed a rate of 1/s with a burst of 3");
    };
    // The burst, plus what refilled meanwhile (one per second).
    let refilled = start.elapsed().as_secs() as usize + 1;
    assert!((3..=3 + refilled).contains(&allowed), "{allowed} requests passed");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()?["error"]["code"], "too_many_requests");
    let retry: u64 = refused.header("retry-after").expect("Retry-After").parse()?;
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    // The key's bucket is shared by both transports.
    let mut g = grpc(&api).await?;
    let status = g
        .all_uid_count(req(&api, "reader", pb::AllUidCountRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.metadata().get("retry-after").is_some());
    // Another key is not affected; a batch larger than the burst can never pass: 400, not 429.
    assert_eq!(api.ok("all_uid_count", "admin", json!({})).await?, json!({"count": 0}));
    let big = json!({"ops": vec![json!({"op": "all_groups"}); 4]});
    let response = api.post("/api/v1/batch", Some("publisher"), &big).await?;
    assert_eq!(response.status, 403, "{}", response.text());
    let response = api.post("/api/v1/batch", Some("admin"), &big).await?;
    assert_eq!(response.status, 400, "{}", response.text());
    // After Retry-After the refused key passes again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(api.ok("all_uid_count", "reader", json!({})).await?, json!({"count": 0}));
    Ok(())
}

// ---------------------------------------------------------------------- documentation

fn repo_file(path: &str) -> Result<String> {
    Ok(std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path),
    )?)
}

/// The first fenced block after `<!-- tested: NAME`.
fn tested_block(doc: &str, name: &str) -> Result<String> {
    let marker = format!("<!-- tested: {name}");
    let Some(start) = doc.find(&marker) else {
        bail!("no {marker} in the document");
    };
    let mut lines = doc[start..].lines().skip_while(|l| !l.starts_with("```"));
    lines.next();
    let block: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    Ok(block.join("\n") + "\n")
}

async fn run_script(program: &str, args: Vec<String>, env: Vec<(&str, String)>) -> Result<String> {
    let mut command = std::process::Command::new(program);
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    if !output.status.success() {
        bail!(
            "{program} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The documented examples run with curl and python3: runners skip them where those are missing
/// (`gatehouse_testkit::services`).
mod needs_curl_and_python3 {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_documented_curl_and_python_examples_bind_a_uid_and_push_to_it() -> Result<()> {
        require(Service::Curl);
        require(Service::Python3);
        let doc = repo_file("docs/server-api.md")?;
        let curl = tested_block(&doc, "curl")?;
        let python = tested_block(&doc, "python")?;
        let cluster = cluster().await?;
        let api = ApiServer::start(&cluster, &[("backend", "admin")], &[]).await?;
        let env = |client: &str| {
            vec![
                ("GATEHOUSE_API", api.url()),
                ("GATEHOUSE_API_KEY", api.key("backend").to_owned()),
                ("CLIENT_ID", client.to_owned()),
            ]
        };

        let mut alice = ApiClient::connect(&cluster.ws_url(0)).await?;
        let out = run_script(
            "bash",
            vec!["-euo".into(), "pipefail".into(), "-c".into(), curl.clone()],
            env(&alice.client_id),
        )
        .await?;
        // Every answer is the one the document shows under its command.
        let shown: Vec<&str> = curl.lines().filter_map(|l| l.strip_prefix("# {")).collect();
        let printed: Vec<&str> = out.lines().collect();
        assert_eq!(printed.len(), shown.len(), "{out}");
        for (printed, shown) in printed.iter().zip(&shown) {
            assert_eq!(printed.strip_prefix('{'), Some(*shown));
        }
        let frame: Value = serde_json::from_str(&next_frame(&mut alice).await?)?;
        assert_eq!(frame, json!({"type": "notice", "text": "hello from curl"}));
        // The block once more: the keyed send is not delivered again (the marker comes first).
        let again = run_script(
            "bash",
            vec!["-euo".into(), "pipefail".into(), "-c".into(), curl],
            env(&alice.client_id),
        )
        .await?;
        assert!(again.contains(r#"{"result":{"replayed":true}}"#), "{again}");
        api.ok(
            "send_to_client",
            "backend",
            json!({"client": alice.client_id, "data": "marker"}),
        )
        .await?;
        assert_eq!(next_frame(&mut alice).await?, "marker");

        let mut bob = ApiClient::connect(&cluster.ws_url(1)).await?;
        let script = std::env::temp_dir().join(format!("gatehouse-example-{}.py", std::process::id()));
        std::fs::write(&script, &python)?;
        let out = run_script("python3", vec![script.display().to_string()], env(&bob.client_id)).await;
        let _ = std::fs::remove_file(&script);
        assert!(out?.contains(&bob.client_id));
        let frame: Value = serde_json::from_str(&next_frame(&mut bob).await?)?;
        assert_eq!(frame, json!({"type": "notice", "text": "hello from python"}));
        Ok(())
    }
}

/// The example deadline of docs/openapi.json, replaced by one an hour ahead.
const EXAMPLE_AT_MS: &str = "1767225600000";
/// The example client ids of docs/openapi.json, replaced by live ones.
const EXAMPLE_CLIENTS: [&str; 2] = ["3f0c9a1b2c3d4e5f0000000000000001", "3f0c9a1b2c3d4e5f0000000000000002"];

/// Validates `instance` against the schema at `pointer` in the OpenAPI document (OpenAPI 3.1
/// schemas are JSON Schema 2020-12; `$ref`s resolve against the whole document).
fn conforms(doc: &Value, pointer: &str, instance: &Value) -> Result<()> {
    let mut root = doc.clone();
    root["$ref"] = json!(format!("#{pointer}"));
    let validator = jsonschema::draft202012::new(&root)?;
    let errors: Vec<String> = validator.iter_errors(instance).map(|e| e.to_string()).collect();
    if !errors.is_empty() {
        bail!("{instance} does not match {pointer}: {errors:?}");
    }
    Ok(())
}

/// The JSON schema pointer of an operation's documented answer with `status`, if documented.
fn answer_schema(doc: &Value, path: &str, method: &str, status: u16) -> Option<String> {
    let escaped = path.replace('~', "~0").replace('/', "~1");
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    let base = match response["$ref"].as_str() {
        Some(reference) => reference.trim_start_matches('#').to_owned(),
        None if response.is_object() => format!("/paths/{escaped}/{method}/responses/{status}"),
        None => return None,
    };
    Some(format!("{base}/content/application~1json/schema"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_what_the_server_answers() -> Result<()> {
    Box::pin(openapi_conformance()).await
}

async fn openapi_conformance() -> Result<()> {
    let text = repo_file("docs/openapi.json")?;
    let doc: Value = serde_json::from_str(&text)?;
    // The validator is no rubber stamp: it refuses what the schemas exclude.
    let error = "/components/schemas/Error";
    conforms(&doc, error, &json!({"error": {"code": "bad_request", "message": "m"}}))?;
    assert!(conforms(&doc, error, &json!({"error": {"code": "teapot", "message": "m"}})).is_err());
    assert!(
        conforms(
            &doc,
            "/components/schemas/ClientIdList",
            &json!({"client_ids": ["xyz"]})
        )
        .is_err()
    );
    assert!(conforms(&doc, "/components/schemas/Count", &json!({"count": 1, "extra": true})).is_err());

    let cluster = cluster().await?;
    let api = ApiServer::start(&cluster, &[("admin", "admin")], &[]).await?;
    let one = ApiClient::connect(&cluster.ws_url(0)).await?;
    let two = ApiClient::connect(&cluster.ws_url(1)).await?;
    api.ok("bind_uid", "admin", json!({"client": one.client_id, "uid": "alice"}))
        .await?;
    api.ok("join_group", "admin", json!({"client": one.client_id, "group": "room"}))
        .await?;

    let mut not_ok = Vec::new();
    let mut checked = 0;
    // The closes last, so that the other examples find their clients connected.
    let mut paths: Vec<(&String, &Value)> = doc["paths"].as_object().unwrap().iter().collect();
    paths.sort_by_key(|(path, _)| path.ends_with("close_client") || path.ends_with("destroy_client"));
    for (path, item) in paths {
        let Some(operation) = item.get("post") else {
            continue;
        };
        let example = &operation["requestBody"]["content"]["application/json"]["example"];
        let body = example
            .to_string()
            .replace(EXAMPLE_CLIENTS[0], &one.client_id)
            .replace(EXAMPLE_CLIENTS[1], &two.client_id)
            .replace(EXAMPLE_AT_MS, &(now_ms() + 3_600_000).to_string());
        let response = api.post_raw(path, Some("admin"), &[], body.as_bytes()).await?;
        let pointer = answer_schema(&doc, path, "post", response.status).unwrap_or_else(|| {
            panic!(
                "{path} answered an undocumented {}: {}",
                response.status,
                response.text()
            )
        });
        conforms(&doc, &pointer, &response.json()?)?;
        if response.status != 200 {
            not_ok.push(format!("{path} {}", response.status));
        }
        // Errors are documented and shaped as documented too.
        for (key, body, status) in [
            (None, body.as_bytes(), 401),
            (Some("admin"), &b"{\"not a field\": 1}"[..], 400),
        ] {
            let response = api.post_raw(path, key, &[], body).await?;
            assert_eq!(response.status, status, "{path}: {}", response.text());
            let pointer = answer_schema(&doc, path, "post", status).expect("documented error");
            conforms(&doc, &pointer, &response.json()?)?;
        }
        checked += 1;
    }
    assert_eq!(checked, 37, "every operation and the batch");
    // The examples succeed; destroying the client that close_client just closed may find it gone.
    assert!(
        not_ok.iter().all(|s| s == "/api/v1/destroy_client 404"),
        "answers other than 200: {not_ok:?}"
    );
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = gatehouse_testkit::cluster::http_get(api.http_addr(), path).await?;
        assert!(
            doc["paths"][path]["get"]["responses"][status.to_string()].is_object(),
            "{path} {status}"
        );
        if path == "/readyz" {
            let pointer = answer_schema(&doc, path, "get", status).expect("documented");
            conforms(&doc, &pointer, &serde_json::from_str(&body)?)?;
        }
    }
    Ok(())
}

/// docs/openapi.json is what docs/openapi.py writes, so the document cannot drift from its
/// source.
mod needs_python3 {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn docs_openapi_json_is_the_output_of_openapi_py() -> Result<()> {
        require(Service::Python3);
        let text = repo_file("docs/openapi.json")?;
        let generated = run_script(
            "python3",
            vec![format!("{}/docs/openapi.py", env!("CARGO_MANIFEST_DIR"))],
            vec![],
        )
        .await?;
        assert!(
            generated == text,
            "docs/openapi.json is stale: run python3 docs/openapi.py > docs/openapi.json"
        );
        Ok(())
    }
}
