//! End-to-end behaviour of the cluster core, on real processes: registries, two gateways and
//! workers started as separate `gatehouse` processes on loopback, driven by WebSocket clients.

use std::time::Duration;

use anyhow::Result;
use gatehouse_testkit::client::Refusal;
use gatehouse_testkit::cluster::metric;
use gatehouse_testkit::{ApiClient, Cluster, WsClient};
use serde_json::json;

async fn api_cluster() -> Result<Cluster> {
    Cluster::builder().gateways(2).workers("api", 2).start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_uid_crosses_gateways() -> Result<()> {
    let cluster = api_cluster().await?;
    let mut alice = ApiClient::connect(&cluster.ws_url(0)).await?;
    let mut bob = ApiClient::connect(&cluster.ws_url(1)).await?;
    alice.ok("bind_uid", json!({"uid": "alice"})).await?;
    bob.ok("send_to_uid", json!({"uid": "alice", "data": "hi alice"}))
        .await?;
    assert_eq!(alice.next_delivery().await?, "hi alice");
    Ok(())
}

/// The point of the registry: once its warm-up is over, a send to a uid is a command to the
/// gateway holding the uid only. The other gateway executes nothing for it (GatewayWorker sends
/// every `sendToUid` to every gateway). Single-threaded processes, as on a shared machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_uid_goes_only_to_the_gateway_that_holds_the_uid() -> Result<()> {
    let mut cluster = Cluster::builder()
        .gateways(2)
        .workers("api", 1)
        .threads(1)
        .start()
        .await?;
    cluster.workers[0]
        .wait_for_log("routing table trusted", Duration::from_secs(20))
        .await?;
    let mut alice = ApiClient::connect(&cluster.ws_url(0)).await?;
    let mut bob = ApiClient::connect(&cluster.ws_url(0)).await?;
    let _carol = ApiClient::connect(&cluster.ws_url(1)).await?;
    alice.ok("bind_uid", json!({"uid": "alice"})).await?;
    let elsewhere = cluster.gateways[1].addr("admin");
    let before = metric(elsewhere, "gatehouse_gateway_commands_total").await?;
    let here = cluster.gateways[0].addr("admin");
    let link_counters = async || -> Result<[u64; 4]> {
        Ok([
            metric(here, "gatehouse_gateway_link_messages_out_total").await?,
            metric(here, "gatehouse_gateway_link_items_out_total").await?,
            metric(here, "gatehouse_gateway_link_messages_in_total").await?,
            metric(here, "gatehouse_gateway_link_items_in_total").await?,
        ])
    };
    let links_before = link_counters().await?;
    for n in 0..20 {
        bob.ok("send_to_uid", json!({"uid": "alice", "data": format!("note {n}")}))
            .await?;
        assert_eq!(alice.next_delivery().await?, format!("note {n}"));
    }
    assert_eq!(
        metric(elsewhere, "gatehouse_gateway_commands_total").await?,
        before,
        "the gateway without alice executed commands for her"
    );
    // Alice's gateway sent bob's 20 frames as events and got back, per frame, its
    // acknowledgement, the send to alice and the reply to bob; its link counters show it (and
    // the batching factor).
    let links_after = link_counters().await?;
    let [messages_out, events, messages_in, items_in] = [0, 1, 2, 3].map(|i| links_after[i] - links_before[i]);
    assert!(
        events >= 20 && (1..=events).contains(&messages_out),
        "{links_before:?} -> {links_after:?}"
    );
    assert!(
        items_in >= 40 && (1..=items_in).contains(&messages_in),
        "{links_before:?} -> {links_after:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_bound_on_two_gateways_receives_on_both() -> Result<()> {
    let cluster = api_cluster().await?;
    let mut phone = ApiClient::connect(&cluster.ws_url(0)).await?;
    let mut laptop = ApiClient::connect(&cluster.ws_url(1)).await?;
    let mut sender = ApiClient::connect(&cluster.ws_url(0)).await?;
    phone.ok("bind_uid", json!({"uid": "carol"})).await?;
    laptop.ok("bind_uid", json!({"uid": "carol"})).await?;
    sender
        .ok("send_to_uid", json!({"uid": "carol", "data": "both devices"}))
        .await?;
    assert_eq!(phone.next_delivery().await?, "both devices");
    assert_eq!(laptop.next_delivery().await?, "both devices");
    let ids = sender.ok("client_ids_by_uid", json!({"uid": "carol"})).await?;
    let mut ids: Vec<String> = serde_json::from_value(ids)?;
    ids.sort();
    let mut expected = vec![phone.client_id.clone(), laptop.client_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_spans_gateways_and_honours_the_exclude_list() -> Result<()> {
    let cluster = api_cluster().await?;
    let mut members = Vec::new();
    for gateway in [0, 1, 0, 1] {
        let mut member = ApiClient::connect(&cluster.ws_url(gateway)).await?;
        member.ok("join_group", json!({"group": "room"})).await?;
        members.push(member);
    }
    let mut outsider = ApiClient::connect(&cluster.ws_url(1)).await?;
    let excluded = members[1].client_id.clone();
    members[0]
        .ok(
            "send_to_group",
            json!({"group": "room", "data": "to the room", "exclude": [excluded]}),
        )
        .await?;
    for (index, member) in members.iter_mut().enumerate() {
        if index == 1 {
            member.ws.expect_silence(Duration::from_millis(300)).await?;
        } else {
            assert_eq!(member.next_delivery().await?, "to the room");
        }
    }
    outsider.ws.expect_silence(Duration::from_millis(100)).await?;
    assert_eq!(
        outsider.ok("group_client_count", json!({"group": "room"})).await?,
        json!(4)
    );
    members[2].ok("leave_group", json!({"group": "room"})).await?;
    assert_eq!(
        outsider.ok("group_client_count", json!({"group": "room"})).await?,
        json!(3)
    );
    outsider.ok("ungroup", json!({"group": "room"})).await?;
    assert_eq!(
        outsider.ok("group_client_count", json!({"group": "room"})).await?,
        json!(0)
    );
    assert_eq!(outsider.ok("all_groups", json!({})).await?, json!([]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_all_reaches_every_client_but_the_excluded() -> Result<()> {
    let cluster = api_cluster().await?;
    let mut clients = Vec::new();
    for gateway in [0, 1, 0, 1, 1] {
        clients.push(ApiClient::connect(&cluster.ws_url(gateway)).await?);
    }
    let excluded = clients[4].client_id.clone();
    clients[0]
        .ok("send_to_all", json!({"data": "everyone", "exclude": [excluded]}))
        .await?;
    for client in clients.iter_mut().take(4) {
        assert_eq!(client.next_delivery().await?, "everyone");
    }
    clients[4].ws.expect_silence(Duration::from_millis(300)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_written_by_one_worker_are_read_by_another() -> Result<()> {
    let cluster = api_cluster().await?;
    // Find two clients whose events are handled by different workers.
    let mut writer = ApiClient::connect(&cluster.ws_url(0)).await?;
    let writer_worker = writer.ok("whoami", json!({})).await?["worker"].clone();
    let mut reader = None;
    for attempt in 0..64 {
        let mut candidate = ApiClient::connect(&cluster.ws_url(attempt % 2)).await?;
        if candidate.ok("whoami", json!({})).await?["worker"] != writer_worker {
            reader = Some(candidate);
            break;
        }
    }
    let mut reader = reader.expect("64 clients all landed on one of two workers");
    let target = writer.client_id.clone();
    writer
        .ok("set_session", json!({"session": {"name": "ann", "level": 1}}))
        .await?;
    reader
        .ok("update_session", json!({"client": target, "session": {"level": 2}}))
        .await?;
    let session = reader.ok("get_session", json!({"client": target})).await?;
    assert_eq!(session, json!({"name": "ann", "level": 2}));
    let all = writer.ok("all_sessions", json!({})).await?;
    assert_eq!(all[&target], json!({"name": "ann", "level": 2}));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_counts_and_lists_add_up_across_gateways() -> Result<()> {
    let cluster = api_cluster().await?;
    let mut clients = Vec::new();
    for (gateway, uid) in [(0, "u1"), (1, "u1"), (1, "u2"), (0, "")] {
        let mut client = ApiClient::connect(&cluster.ws_url(gateway)).await?;
        if !uid.is_empty() {
            client.ok("bind_uid", json!({"uid": uid})).await?;
            client.ok("join_group", json!({"group": format!("g-{uid}")})).await?;
        }
        clients.push(client);
    }
    let probe = &mut clients[3];
    assert_eq!(probe.ok("all_client_count", json!({})).await?, json!(4));
    assert_eq!(probe.ok("all_uids", json!({})).await?, json!(["u1", "u2"]));
    assert_eq!(probe.ok("all_uid_count", json!({})).await?, json!(2));
    assert_eq!(probe.ok("all_groups", json!({})).await?, json!(["g-u1", "g-u2"]));
    assert_eq!(probe.ok("group_uids", json!({"group": "g-u1"})).await?, json!(["u1"]));
    assert_eq!(
        probe
            .ok("group_client_counts", json!({"groups": ["g-u1", "g-u2", "none"]}))
            .await?,
        json!({"g-u1": 2, "g-u2": 1, "none": 0})
    );
    assert_eq!(
        probe.ok("online_uids", json!({"uids": ["u1", "u2", "u3"]})).await?,
        json!(["u1", "u2"])
    );
    let ids: Vec<String> = serde_json::from_value(probe.ok("all_client_ids", json!({})).await?)?;
    assert_eq!(ids.len(), 4);
    let first = clients[0].client_id.clone();
    assert_eq!(clients[3].ok("uid_of", json!({"client": first})).await?, json!("u1"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_uid_online_turns_false_after_the_last_connection_closes() -> Result<()> {
    let cluster = api_cluster().await?;
    let mut dave = ApiClient::connect(&cluster.ws_url(0)).await?;
    let mut observer = ApiClient::connect(&cluster.ws_url(1)).await?;
    dave.ok("bind_uid", json!({"uid": "dave"})).await?;
    let dave_id = dave.client_id.clone();
    assert_eq!(observer.ok("is_uid_online", json!({"uid": "dave"})).await?, json!(true));
    assert_eq!(observer.ok("is_online", json!({"client": dave_id})).await?, json!(true));
    dave.ws.close().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while observer.ok("is_uid_online", json!({"uid": "dave"})).await? != json!(false) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dave still online 5s after closing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        observer.ok("is_online", json!({"client": dave_id})).await?,
        json!(false)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_right_after_a_bind_always_arrives() -> Result<()> {
    let cluster = api_cluster().await?;
    let mut sender = ApiClient::connect(&cluster.ws_url(1)).await?;
    let mut workers_seen = std::collections::HashSet::new();
    for round in 0..150 {
        let mut target = ApiClient::connect(&cluster.ws_url(0)).await?;
        let uid = format!("fresh-{round}");
        target.ok("bind_uid", json!({"uid": uid})).await?;
        workers_seen.insert(target.ok("whoami", json!({})).await?["worker"].to_string());
        sender
            .ok("send_to_uid", json!({"uid": uid, "data": format!("m{round}")}))
            .await?;
        assert_eq!(target.next_delivery().await?, format!("m{round}"), "round {round}");
    }
    assert_eq!(workers_seen.len(), 2, "binds were handled by only one worker");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_handshake_gets_its_http_status() -> Result<()> {
    let cluster = api_cluster().await?;
    let url = format!("{}?reject=401", cluster.ws_url(0));
    match WsClient::try_connect(&url).await? {
        Err(Refusal::Http(status, body)) => {
            assert_eq!(status, 401);
            assert!(body.contains("rejected on request"), "{body}");
        }
        other => panic!("expected a 401, got {:?}", other.map(|_| "a connection")),
    }
    // A uid bound during the handshake is routable before the first frame.
    let mut eve = ApiClient::connect(&format!("{}?uid=eve", cluster.ws_url(0))).await?;
    let mut other = ApiClient::connect(&cluster.ws_url(1)).await?;
    other
        .ok("send_to_uid", json!({"uid": "eve", "data": "welcome"}))
        .await?;
    assert_eq!(eve.next_delivery().await?, "welcome");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_client_delivers_the_last_message_and_destroy_does_not_wait() -> Result<()> {
    let cluster = api_cluster().await?;
    let mut leaving = ApiClient::connect(&cluster.ws_url(0)).await?;
    let mut closer = ApiClient::connect(&cluster.ws_url(1)).await?;
    let id = leaving.client_id.clone();
    closer
        .ok("close_client", json!({"client": id, "data": "goodbye"}))
        .await?;
    assert_eq!(leaving.next_delivery().await?, "goodbye");
    assert_eq!(leaving.ws.expect_close().await?, 1000);
    let mut doomed = ApiClient::connect(&cluster.ws_url(0)).await?;
    let id = doomed.client_id.clone();
    closer.ok("destroy_client", json!({"client": id})).await?;
    assert_eq!(doomed.ws.expect_close().await?, 1000);
    let missing = closer.call("bind_uid", json!({"client": id, "uid": "ghost"})).await?;
    assert_eq!(missing.unwrap_err()["code"], json!("not_found"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_api_input_gets_a_typed_error_and_the_connection_stays_usable() -> Result<()> {
    let cluster = api_cluster().await?;
    let mut client = ApiClient::connect(&cluster.ws_url(0)).await?;
    let error = client.call("bind_uid", json!({"uid": ""})).await?.unwrap_err();
    assert_eq!(error["code"], json!("bad_request"));
    let error = client
        .call("bind_uid", json!({"uid": "x".repeat(300)}))
        .await?
        .unwrap_err();
    assert_eq!(error["code"], json!("bad_request"));
    let error = client
        .call("send_to_client", json!({"client": "not-an-id", "data": "x"}))
        .await?;
    assert!(error.is_err());
    client.ws.send_text("{not json").await?;
    let answer = client.ws.recv_json().await?;
    assert_eq!(answer["error"]["code"], json!("bad_request"));
    assert_eq!(client.ok("whoami", json!({})).await?["client"], json!(client.client_id));
    Ok(())
}
