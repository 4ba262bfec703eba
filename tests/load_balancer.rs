//! Gateways behind a real load balancer (HAProxy): clients only know one address.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;
use gatehouse_testkit::{ApiClient, Cluster, Haproxy};
use serde_json::json;

mod needs_haproxy {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_behind_haproxy_reach_each_other_across_gateways() -> Result<()> {
        let mut cluster = Cluster::builder().gateways(2).workers("api", 2).start().await?;
        let gateways = [
            (cluster.gateways[0].addr("ws"), cluster.gateways[0].addr("admin")),
            (cluster.gateways[1].addr("ws"), cluster.gateways[1].addr("admin")),
        ];
        let balancer = Haproxy::start(&gateways).await?;

        // Round robin spreads clients over both gateways (the client id names the gateway).
        let mut clients = Vec::new();
        for i in 0..6 {
            let mut client = ApiClient::connect(&balancer.ws_url()).await?;
            client.ok("bind_uid", json!({"uid": format!("lb-{i}")})).await?;
            clients.push(client);
        }
        let gateway_ids: HashSet<String> = clients.iter().map(|c| c.client_id[..16].to_owned()).collect();
        assert_eq!(gateway_ids.len(), 2, "haproxy sent every client to one gateway");
        for (i, client) in clients.iter_mut().enumerate() {
            let to = format!("lb-{}", (i + 1) % 6);
            client
                .ok("send_to_uid", json!({"uid": to, "data": format!("from {i}")}))
                .await?;
        }
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(client.next_delivery().await?, format!("from {}", (i + 5) % 6));
        }

        // A gateway that dies is taken out by the health check; new clients land on the other one.
        let survivor = clients
            .iter()
            .find(|c| c.client_id[..16] != clients[0].client_id[..16])
            .unwrap()
            .client_id[..16]
            .to_owned();
        let first_gateway = clients[0].client_id[..16].to_owned();
        let dead = if cluster.gateways[0]
            .log_text()
            .contains(&format!("gateway_id={first_gateway}"))
        {
            0
        } else {
            1
        };
        cluster.gateways[dead].kill().await;
        // Until the health check notices (two failed checks, 200 ms apart), a connect may fail.
        // Round robin alternates, so two connects in a row landing on the survivor mean the dead
        // gateway is out of rotation.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut in_a_row = 0;
        while in_a_row < 2 {
            match ApiClient::connect(&balancer.ws_url()).await {
                Ok(client) if client.client_id[..16] == survivor => in_a_row += 1,
                _ => in_a_row = 0,
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "haproxy kept routing to the dead gateway"
            );
        }
        for _ in 0..4 {
            let mut late = ApiClient::connect(&balancer.ws_url()).await?;
            assert_eq!(late.client_id[..16], survivor);
            late.ok("send_to_uid", json!({"uid": "nobody", "data": "x"})).await?;
        }
        Ok(())
    }
}
