//! Membership end to end, between real nodes: invites that work once and not after they
//! expire (with the inviting admin offline), a key-holder who is not a member getting nothing
//! accepted, removal with a network key rotation, and a charter amendment taking effect on
//! every node at its time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;
use wattmesh_node::neighbourhood::{Invite, Neighbourhood, default_profile, psk_path};
use wattmesh_node::node::{Amendment, InviteArgs, PostOffer, SideArg};
use wattmesh_node::store::Store;
use wattmesh_protocol::roster::{Change, sign_change};

const WAIT: Duration = Duration::from_secs(30);

fn sell(wh: u64) -> PostOffer {
    PostOffer {
        side: SideArg::Sell,
        quantity_wh: wh,
        price: 9_000,
        slot_ms: None,
        min_fill_wh: None,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Joins `dir` with an invite code, as `wattmesh join CODE` does.
fn join_with(dir: &std::path::Path, code: &str) -> anyhow::Result<Neighbourhood> {
    std::fs::create_dir_all(dir).unwrap();
    let store = Store::open(&dir.join("wattmesh.redb")).unwrap();
    let (key, _) = wattmesh_node::identity::load_or_create(&dir.join("node.key")).unwrap();
    let (invite, _) = Invite::from_code(code)?;
    invite.join(dir, &store, &key, default_profile(&key.node_id()), now_ms())
}

async fn members_of(n: &TestNode) -> Vec<String> {
    n.handle
        .members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.node_id)
        .collect()
}

async fn invite(n: &TestNode, valid_secs: u64) -> String {
    n.handle
        .invite(InviteArgs {
            bootstrap: vec![],
            note: "test".into(),
            valid_secs,
        })
        .await
        .unwrap()
        .unwrap()
        .code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_admits_once_not_twice_and_not_after_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    found(&root.join("admin"));
    let admin = TestNode::start(&root.join("admin"), test_config(vec![])).await;
    let code = invite(&admin, 3_600).await;

    // B joins with the code and is admitted as soon as the admin fetches its join record.
    let b_hood = join_with(&root.join("b"), &code).unwrap();
    let b = TestNode::start(&root.join("b"), test_config(vec![admin.addr().await])).await;
    let b_id = b.handle.status().await.unwrap().node_id;
    eventually(WAIT, || async {
        members_of(&admin).await.contains(&b_id).then_some(())
    })
    .await
    .expect("the admin admits B");
    let nonce = b.handle.post(sell(300)).await.unwrap().unwrap().nonce;
    eventually(WAIT, || async {
        admin.has_offer(nonce).await.then_some(())
    })
    .await
    .expect("B's offer is accepted");
    // The newcomer counts itself a member from the moment it joins.
    assert!(wattmesh_node::neighbourhood::read(&b_hood.roster).is_member(&key_of(&root.join("b"))));

    // C uses the same code: its join is valid on its own, but the ticket is spent.
    join_with(&root.join("c"), &code).unwrap();
    let c = TestNode::start(&root.join("c"), test_config(vec![admin.addr().await])).await;
    let c_id = c.handle.status().await.unwrap().node_id;
    let c_nonce = c.handle.post(sell(400)).await.unwrap().unwrap().nonce;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !members_of(&admin).await.contains(&c_id),
        "a second use admits nobody"
    );
    assert!(
        !admin.has_offer(c_nonce).await,
        "a non-member's offer is refused"
    );
    assert!(!b.has_offer(c_nonce).await);

    // An expired invite: the newcomer's own node refuses to join with it, and a join record
    // signed after the expiry anyway (a hand-made one) is refused by the members.
    let short = invite(&admin, 1).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let err = join_with(&root.join("d"), &short).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    let ddir = root.join("d2");
    let (invite_d, chain) = Invite::from_code(&short).unwrap();
    let dkey = provision_from_invite(&ddir, &invite_d);
    let late = sign_change(
        &chain,
        &dkey,
        now_ms(),
        Change::Join {
            ticket: invite_d.ticket.clone(),
            profile: default_profile(&dkey.node_id()),
        },
    );
    let dstore = Store::open(&ddir.join("wattmesh.redb")).unwrap();
    dstore
        .put_roster(&[(
            wattmesh_protocol::Envelope::content_id(&late.to_bytes()).0,
            late.to_bytes(),
        )])
        .unwrap();
    drop(dstore);
    let d = TestNode::start(&ddir, test_config(vec![admin.addr().await])).await;
    let d_nonce = d.handle.post(sell(500)).await.unwrap().unwrap().nonce;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d_id = d.handle.status().await.unwrap().node_id;
    assert!(!members_of(&admin).await.contains(&d_id));
    assert!(!admin.has_offer(d_nonce).await);

    // A trade proposal from a non-member is refused too.
    let taken = c
        .handle
        .take(
            wattmesh_protocol::NodeId::from_hex(&b_id).unwrap(),
            nonce,
            100,
        )
        .await
        .unwrap();
    assert!(taken.is_err(), "a non-member cannot trade: {taken:?}");

    for n in [admin, b, c, d] {
        n.handle.stop().await;
    }
}

fn key_of(dir: &std::path::Path) -> wattmesh_protocol::NodeId {
    wattmesh_node::identity::load(&dir.join("node.key"))
        .unwrap()
        .node_id()
}

/// The admin's node holds its database open; tests read their own copies.
fn admin_store_copy(dir: &std::path::Path) -> Store {
    let copy = dir.with_extension("copy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(dir.join("wattmesh.redb"), copy.join("wattmesh.redb")).unwrap();
    std::fs::copy(psk_path(dir), psk_path(&copy)).unwrap();
    Store::open(&copy.join("wattmesh.redb")).unwrap()
}

/// Saves an invite's network key and charters in `dir` without joining.
fn provision_from_invite(dir: &std::path::Path, invite: &Invite) -> wattmesh_protocol::NodeKey {
    std::fs::create_dir_all(dir).unwrap();
    let store = Store::open(&dir.join("wattmesh.redb")).unwrap();
    let chain = wattmesh_node::neighbourhood::chain_from(&invite.charters).unwrap();
    let n = Neighbourhood {
        roster: std::sync::Arc::new(std::sync::RwLock::new(
            wattmesh_protocol::roster::Roster::new(&chain),
        )),
        chain,
        psk: invite.psk,
        epoch: invite.epoch,
    };
    n.save(dir, &store).unwrap();
    wattmesh_node::identity::load_or_create(&dir.join("node.key"))
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_does_not_need_the_inviting_admin_online() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hood = found(&root.join("admin"));
    join(&root.join("b"), &hood);
    let admin = TestNode::start(&root.join("admin"), test_config(vec![])).await;
    let b = TestNode::start(&root.join("b"), test_config(vec![admin.addr().await])).await;
    eventually(WAIT, || async { (b.peer_count().await == 1).then_some(()) })
        .await
        .unwrap();
    let b_addr = b.addr().await;
    let code = invite(&admin, 3_600).await;
    admin.handle.stop().await;
    drop(admin);

    // The newcomer reaches B only; B admits it on the strength of the admin's ticket.
    join_with(&root.join("new"), &code).unwrap();
    let newcomer = TestNode::start(&root.join("new"), test_config(vec![b_addr])).await;
    let id = newcomer.handle.status().await.unwrap().node_id;
    eventually(WAIT, || async {
        members_of(&b).await.contains(&id).then_some(())
    })
    .await
    .expect("B admits the newcomer while the admin is offline");
    let nonce = newcomer
        .handle
        .post(sell(250))
        .await
        .unwrap()
        .unwrap()
        .nonce;
    eventually(WAIT, || async { b.has_offer(nonce).await.then_some(()) })
        .await
        .expect("B accepts the newcomer's offer");
    b.handle.stop().await;
    newcomer.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_holder_who_is_not_a_member_gets_no_offer_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hood = found(&root.join("admin"));
    let admin = TestNode::start(&root.join("admin"), test_config(vec![])).await;
    // Network key and charter, but no roster record.
    provision(&root.join("sybil"), &hood);
    let sybil = TestNode::start(&root.join("sybil"), test_config(vec![admin.addr().await])).await;
    eventually(WAIT, || async {
        (admin.peer_count().await == 1).then_some(())
    })
    .await
    .expect("the key lets it connect");
    let nonce = sybil.handle.post(sell(300)).await.unwrap().unwrap().nonce;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!admin.has_offer(nonce).await);
    assert!(admin.handle.status().await.unwrap().counters.gossip_ignored >= 1);
    admin.handle.stop().await;
    sybil.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_refused_and_the_rest_move_to_a_new_network_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hood = found(&root.join("admin"));
    join(&root.join("b"), &hood);
    join(&root.join("c"), &hood);
    let admin = TestNode::start(&root.join("admin"), test_config(vec![])).await;
    let a_addr = admin.addr().await;
    let b = TestNode::start(&root.join("b"), test_config(vec![a_addr.clone()])).await;
    let c = TestNode::start(&root.join("c"), test_config(vec![a_addr.clone()])).await;
    let c_id = c.handle.status().await.unwrap().node_id;
    eventually(WAIT, || async {
        (members_of(&admin).await.len() == 3 && members_of(&b).await.len() == 3).then_some(())
    })
    .await
    .expect("everyone knows everyone");
    let old_psk = std::fs::read(psk_path(&root.join("admin"))).unwrap();

    let said = admin
        .handle
        .remove(c_id[..12].to_string(), None)
        .await
        .unwrap();
    assert!(said.is_ok(), "{said:?}");
    eventually(WAIT, || async {
        (!members_of(&b).await.contains(&c_id) && c.peer_count().await == 0).then_some(())
    })
    .await
    .expect("C is removed and disconnected");
    // After the rotation's delay the remaining members hold the same new key; C the old one.
    eventually(Duration::from_secs(40), || async {
        let a = std::fs::read(psk_path(&root.join("admin"))).unwrap();
        let bk = std::fs::read(psk_path(&root.join("b"))).unwrap();
        (a != old_psk && a == bk).then_some(())
    })
    .await
    .expect("the admin and B switch to the new key");
    assert_eq!(std::fs::read(psk_path(&root.join("c"))).unwrap(), old_psk);

    // C cannot get back in; B, restarted with the new key from its file, can.
    c.handle.dial(a_addr.parse().unwrap()).await.unwrap().ok();
    b.shutdown().await;
    let b = TestNode::start(&root.join("b"), test_config(vec![a_addr.clone()])).await;
    eventually(WAIT, || async { (b.peer_count().await == 1).then_some(()) })
        .await
        .expect("B reconnects under the new key");
    let nonce = b.handle.post(sell(200)).await.unwrap().unwrap().nonce;
    eventually(WAIT, || async {
        admin.has_offer(nonce).await.then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.peer_count().await, 0, "the removed member stays out");
    let c_nonce = c.handle.post(sell(100)).await.unwrap().unwrap().nonce;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!admin.has_offer(c_nonce).await);
    for n in [admin, b, c] {
        n.handle.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charter_amendment_takes_effect_everywhere_at_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hood = found(&root.join("admin"));
    join(&root.join("b"), &hood);
    let admin = TestNode::start(&root.join("admin"), test_config(vec![])).await;
    let b = TestNode::start(&root.join("b"), test_config(vec![admin.addr().await])).await;
    eventually(WAIT, || async { (b.peer_count().await == 1).then_some(()) })
        .await
        .unwrap();
    // Under version 1, B sells at 12 ¢/kWh (within the 4.0..13.5 band).
    let mut early = sell(300);
    early.price = 12_000;
    let early_nonce = b.handle.post(early).await.unwrap().unwrap().nonce;
    eventually(WAIT, || async {
        admin.has_offer(early_nonce).await.then_some(())
    })
    .await
    .unwrap();

    // Version 2 lowers the retail tariff to 11 ¢/kWh, effective in 4 seconds.
    let effective = now_ms() + 4_000;
    let said = admin
        .handle
        .amend(Amendment {
            retail_price: Some(11_000),
            effective_ms: Some(effective),
            ..Amendment::default()
        })
        .await
        .unwrap();
    assert!(said.is_ok(), "{said:?}");
    // Both nodes hold it, but version 1 stays in effect until its time.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(b.handle.status().await.unwrap().charter_version, 1);
    eventually(WAIT, || async {
        (b.handle.status().await.unwrap().charter_version == 2
            && admin.handle.status().await.unwrap().charter_version == 2)
            .then_some(())
    })
    .await
    .expect("version 2 takes effect on both nodes");
    assert!(now_ms() >= effective);
    // The new band applies: 12 ¢ is now above retail.
    let mut high = sell(300);
    high.price = 12_000;
    assert!(b.handle.post(high).await.unwrap().is_err());
    let mut ok = sell(300);
    ok.price = 10_500;
    let ok_nonce = b.handle.post(ok).await.unwrap().unwrap().nonce;
    eventually(WAIT, || async {
        admin.has_offer(ok_nonce).await.then_some(())
    })
    .await
    .expect("an offer signed under version 2 is accepted");
    // The offer signed under version 1 still verifies against the chain.
    let bytes = admin.handle.offer_bytes(early_nonce).await.unwrap();
    if let Some(bytes) = bytes {
        let chain =
            Neighbourhood::load(&root.join("admin"), &admin_store_copy(&root.join("admin")))
                .unwrap()
                .unwrap()
                .chain;
        assert_eq!(chain.versions().len(), 2);
        assert!(wattmesh_protocol::validate::validate_archival(&bytes, &chain, false).is_ok());
    }
    admin.handle.stop().await;
    b.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_moves_to_a_new_key_and_keeps_its_membership() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hood = found(&root.join("admin"));
    join(&root.join("b"), &hood);
    let admin = TestNode::start(&root.join("admin"), test_config(vec![])).await;
    let a_addr = admin.addr().await;
    let b = TestNode::start(&root.join("b"), test_config(vec![a_addr.clone()])).await;
    let old_id = b.handle.status().await.unwrap().node_id;
    eventually(WAIT, || async {
        members_of(&admin).await.contains(&old_id).then_some(())
    })
    .await
    .unwrap();
    let name = |ms: &[wattmesh_node::node::MemberView], id: &str| {
        ms.iter().find(|m| m.node_id == id).map(|m| m.name.clone())
    };
    let old_name = name(&admin.handle.members().await.unwrap(), &old_id).unwrap();
    b.shutdown().await;

    // The owner rotates the key with the node stopped (`wattmesh keys rotate`).
    let bdir = root.join("b");
    let new_id = {
        let store = Store::open(&bdir.join("wattmesh.redb")).unwrap();
        let n = Neighbourhood::load(&bdir, &store).unwrap().unwrap();
        let old = wattmesh_node::identity::load(&bdir.join("node.key")).unwrap();
        n.migrate_key(&bdir, &store, &old, now_ms(), false)
            .unwrap()
            .node_id()
            .to_hex()
    };
    assert_ne!(new_id, old_id);
    let b = TestNode::start(&bdir, test_config(vec![a_addr])).await;
    assert_eq!(b.handle.status().await.unwrap().node_id, new_id);
    eventually(WAIT, || async {
        let ms = admin.handle.members().await.unwrap();
        (name(&ms, &new_id).is_some() && name(&ms, &old_id).is_none()).then_some(ms)
    })
    .await
    .map(|ms| {
        let m = ms.iter().find(|m| m.node_id == new_id).unwrap();
        assert_eq!(m.name, old_name, "the profile moves with the member");
        assert_eq!(m.previous.as_deref(), Some(old_id.as_str()));
    })
    .expect("the admin follows the move");
    let nonce = b.handle.post(sell(150)).await.unwrap().unwrap().nonce;
    eventually(WAIT, || async {
        admin.has_offer(nonce).await.then_some(())
    })
    .await
    .expect("offers under the new key are accepted");
    admin.handle.stop().await;
    b.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_their_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hood = found(&root.join("admin"));
    join(&root.join("b"), &hood);
    let mut cfg = test_config(vec![]);
    // The admin knows an address it is reachable at (a forwarded port on its router).
    cfg.reach.external_addresses = vec!["/ip4/203.0.113.9/tcp/4100".into()];
    let admin = TestNode::start(&root.join("admin"), cfg).await;
    let admin_id = admin.handle.status().await.unwrap().node_id;
    let b = TestNode::start(&root.join("b"), test_config(vec![admin.addr().await])).await;
    let got = eventually(WAIT, || async {
        let ms = b.handle.members().await.ok()?;
        let a = ms.into_iter().find(|m| m.node_id == admin_id)?;
        a.addrs
            .iter()
            .any(|x| x.starts_with("/ip4/203.0.113.9/tcp/4100"))
            .then_some(())
    })
    .await;
    assert!(got.is_some(), "B learns the admin's shared address");
    admin.handle.stop().await;
    b.handle.stop().await;
}
