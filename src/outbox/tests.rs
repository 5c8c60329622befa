use super::*;
use crate::net::LinkCaps;

fn h(b: u8) -> Hash {
    Hash([b; 32])
}

#[test]
fn enqueue_is_durable_deduplicated_and_counted() {
    let mut store = Store::open_in_memory().unwrap();
    let mut ob = Outbox::default();
    let d = Dest::Peer([7; 32]);
    let a = ob
        .enqueue(&mut store, 10, d, OutItem::Tx(h(1)), Some(vec![1].into()))
        .unwrap();
    let Enqueued::Added(id) = a else {
        panic!("{a:?}")
    };
    assert_eq!(
        ob.enqueue(&mut store, 11, d, OutItem::Tx(h(1)), None)
            .unwrap(),
        Enqueued::Exists(id)
    );
    ob.enqueue(&mut store, 12, Dest::Any, OutItem::Block(h(2)), None)
        .unwrap();
    let again = Outbox::load(&store).unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(
        again.find(d, OutItem::Tx(h(1))).unwrap().payload.as_deref(),
        Some(&[1u8][..])
    );
    ob.delivered(&mut store, id).unwrap();
    let t = store.outbox_totals().unwrap();
    assert_eq!((t.enqueued, t.delivered, t.dropped), (2, 1, 0));
    // Blocks go first.
    let due = Outbox::load(&store).unwrap().due_for(&[7; 32], 100);
    assert_eq!(due.len(), 1);
}

#[test]
fn operator_commands_and_expiry() {
    let mut store = Store::open_in_memory().unwrap();
    let mut ob = Outbox::default();
    let Enqueued::Added(id) = ob
        .enqueue(&mut store, 0, Dest::Any, OutItem::Tx(h(3)), None)
        .unwrap()
    else {
        panic!()
    };
    ob.command(&mut store, 1, id, Command::Hold)
        .unwrap()
        .unwrap();
    assert!(ob.due_for(&[0; 32], 5).is_empty());
    assert!(ob
        .command(&mut store, 1, id, Command::Hold)
        .unwrap()
        .is_ok());
    ob.command(&mut store, 2, id, Command::Release)
        .unwrap()
        .unwrap();
    assert_eq!(ob.due_for(&[0; 32], 5), vec![id]);
    assert_eq!(ob.expire(&mut store, EXPIRY_MS + 1).unwrap(), vec![id]);
    assert_eq!(
        Outbox::load(&store).unwrap().get(id).unwrap().state,
        State::Expired
    );
    ob.command(&mut store, EXPIRY_MS + 2, id, Command::Retry)
        .unwrap()
        .unwrap();
    assert_eq!(ob.get(id).unwrap().state, State::Pending);
    ob.command(&mut store, 0, id, Command::Drop)
        .unwrap()
        .unwrap();
    assert!(ob.is_empty());
    assert_eq!(store.outbox_totals().unwrap().dropped, 1);
    assert!(ob
        .command(&mut store, 0, id, Command::Drop)
        .unwrap()
        .is_err());
}

#[test]
fn full_outbox_refuses_txs_before_blocks() {
    let mut store = Store::open_in_memory().unwrap();
    let mut ob = Outbox::default();
    let d = Dest::Peer([1; 32]);
    for i in 0..MAX_PER_DEST as u32 {
        let mut x = [0u8; 32];
        x[..4].copy_from_slice(&i.to_le_bytes());
        ob.enqueue(&mut store, 0, d, OutItem::Tx(Hash(x)), None)
            .unwrap();
    }
    let r = ob
        .enqueue(&mut store, 0, d, OutItem::Tx(h(9)), None)
        .unwrap();
    assert!(matches!(r, Enqueued::Refused(_)), "{r:?}");
    assert_eq!(ob.refused, 1);
    assert_eq!(ob.len(), MAX_PER_DEST);
}

#[test]
fn backoff_grows_caps_and_depends_on_link_speed() {
    let fast = RetryPolicy::for_link(&LinkCaps::tcp(), 300);
    let slow = RetryPolicy::for_link(
        &LinkCaps {
            bitrate_bps: 1200,
            ..LinkCaps::tcp()
        },
        300,
    );
    assert!(slow.base_ms > fast.base_ms && slow.cap_ms > fast.cap_ms);
    assert!(slow.window < fast.window);
    let mut rng = Rng::new(1);
    let mut last = 0;
    for n in 1..20 {
        let d = fast.delay_ms(n, &mut rng);
        assert!(d <= fast.cap_ms);
        assert!(d >= last.min(fast.cap_ms / 2), "{n}: {d} after {last}");
        last = d;
    }
    assert_eq!(
        fast.delay_ms(40, &mut rng),
        fast.cap_ms.min(fast.delay_ms(40, &mut rng))
    );
    // 2 s, 4 s, 8 s ... within 60 s: 1 + 4 attempts (2+4+8+16 = 30 <= 60 < 62).
    assert_eq!(fast.max_attempts_in(60_000), 5);
}

#[test]
fn seen_set_matches_hash_and_is_capped() {
    let mut store = Store::open_in_memory().unwrap();
    let s = [5u8; 32];
    store.seen_insert(&s, 1, &[1; 32], 3).unwrap();
    assert!(store.seen_contains(&s, 1, &[1; 32]).unwrap());
    assert!(!store.seen_contains(&s, 1, &[2; 32]).unwrap());
    for i in 2..10 {
        store.seen_insert(&s, i, &[1; 32], 3).unwrap();
    }
    assert_eq!(store.seen_len().unwrap(), 3);
    assert!(!store.seen_contains(&s, 1, &[1; 32]).unwrap());
}

/// One transaction queued for several peers is held once in memory, also after a reload
/// from the store (a gateway holds thousands of them for peers out of reach).
#[test]
fn items_of_one_transaction_share_their_payload() {
    let mut store = Store::open_in_memory().unwrap();
    let mut ob = Outbox::default();
    let payload: Arc<[u8]> = vec![9u8; 150].into();
    for peer in 1..=3 {
        ob.enqueue(
            &mut store,
            0,
            Dest::Peer([peer; 32]),
            OutItem::Tx(h(4)),
            Some(Arc::clone(&payload)),
        )
        .unwrap();
    }
    ob.enqueue(
        &mut store,
        0,
        Dest::Any,
        OutItem::Tx(h(5)),
        Some(vec![9u8; 150].into()),
    )
    .unwrap();
    let again = Outbox::load(&store).unwrap();
    let of = |item| -> Vec<Arc<[u8]>> {
        again
            .items()
            .filter(|it| it.item == item)
            .filter_map(|it| it.payload.clone())
            .collect()
    };
    let four = of(OutItem::Tx(h(4)));
    assert_eq!(four.len(), 3);
    assert_eq!(&four[0][..], &payload[..]);
    assert!(four.iter().all(|p| Arc::ptr_eq(p, &four[0])));
    let five = of(OutItem::Tx(h(5)));
    assert!(!Arc::ptr_eq(&five[0], &four[0]));
}

/// The indexes kept beside the items (per destination in send order, per transaction,
/// the count of pending items) answer as a walk over every item would, through a seeded
/// mix of queuing, attempts, deliveries, expiries, retargets and operator commands.
#[test]
fn the_indexes_agree_with_a_walk_over_every_item() {
    let mut store = Store::open_in_memory().unwrap();
    let mut ob = Outbox::default();
    let mut rng = Rng::new(7);
    let dests = [Dest::Peer([1; 32]), Dest::Peer([2; 32]), Dest::Any];
    for step in 0..600u64 {
        let now = step * 10;
        let ids: Vec<u64> = ob.items().map(|it| it.id).collect();
        let pick = |rng: &mut Rng| {
            ids.get(rng.below(ids.len().max(1) as u64) as usize)
                .copied()
        };
        match rng.below(8) {
            0..=2 => {
                let dest = dests[rng.below(3) as usize];
                let n = rng.below(40) as u8;
                let item = if rng.below(4) == 0 {
                    OutItem::Block(h(n))
                } else {
                    OutItem::Tx(h(n))
                };
                ob.enqueue(&mut store, now, dest, item, None).unwrap();
            }
            3 => {
                if let Some(id) = pick(&mut rng) {
                    ob.attempted(&mut store, id, now + rng.below(500)).unwrap();
                }
            }
            4 => {
                if let Some(id) = pick(&mut rng) {
                    ob.delivered(&mut store, id).unwrap();
                }
            }
            5 => {
                if let Some(id) = pick(&mut rng) {
                    ob.expire_now(&mut store, id).unwrap();
                }
            }
            6 => {
                let dest = dests[rng.below(3) as usize];
                let new = h(100 + rng.below(50) as u8);
                ob.coalesce_block(&mut store, dest, new, |_| true).unwrap();
            }
            _ => {
                if let Some(id) = pick(&mut rng) {
                    let cmd = [
                        Command::Hold,
                        Command::Release,
                        Command::Retry,
                        Command::Drop,
                    ][rng.below(4) as usize];
                    let _ = ob.command(&mut store, now, id, cmd).unwrap();
                }
            }
        }
        let pending = ob.items().filter(|it| it.state == State::Pending).count();
        assert_eq!(ob.pending(), pending, "step {step}");
        for node in [[1u8; 32], [2; 32], [3; 32]] {
            let mut walk: Vec<(u8, u64)> = ob
                .items()
                .filter(|it| {
                    it.state == State::Pending
                        && it.next_attempt_ms <= now
                        && (it.dest == Dest::Peer(node) || it.dest == Dest::Any)
                })
                .map(|it| (it.priority, it.id))
                .collect();
            walk.sort_unstable();
            let walk: Vec<u64> = walk.into_iter().map(|(_, id)| id).collect();
            assert_eq!(ob.due_for(&node, now), walk, "step {step}");
        }
        for dest in dests {
            let mut walk: Vec<u64> = ob
                .items()
                .filter(|it| it.dest == dest)
                .map(|it| it.id)
                .collect();
            let mut index: Vec<u64> = ob.ids_for_dest(dest).collect();
            walk.sort_unstable();
            index.sort_unstable();
            assert_eq!(index, walk, "step {step}");
        }
        for n in 0..40u8 {
            let walk: Vec<u64> = ob
                .items()
                .filter(|it| it.item == OutItem::Tx(h(n)))
                .map(|it| it.id)
                .collect();
            assert_eq!(
                ob.tx_items_of(&h(n)).collect::<Vec<_>>(),
                walk,
                "step {step}"
            );
        }
        // Every item is found by what it carries and where it goes, blocks retargeted
        // by a newer tip included, and nothing else is.
        for dest in dests {
            for n in (0..40u8).chain(100..150) {
                for item in [OutItem::Tx(h(n)), OutItem::Block(h(n))] {
                    let walk = ob
                        .items()
                        .find(|it| it.dest == dest && it.item == item)
                        .map(|it| it.id);
                    assert_eq!(ob.find(dest, item).map(|it| it.id), walk, "step {step}");
                }
            }
        }
    }
    let again = Outbox::load(&store).unwrap();
    assert_eq!(again.pending(), ob.pending());
    assert_eq!(
        again.due_for(&[1; 32], u64::MAX),
        ob.due_for(&[1; 32], u64::MAX)
    );
}

/// Hundreds of items delivered at once (a gateway's link is back) leave the rest as they
/// were: listed in order, found by id and by what they carry, the same after a reload,
/// and new items go after them.
#[test]
fn items_left_after_many_deliveries_are_found_as_before() {
    let mut store = Store::open_in_memory().unwrap();
    let mut ob = Outbox::default();
    let dests = [Dest::Peer([1; 32]), Dest::Peer([2; 32]), Dest::Any];
    let item = |n: u32| {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_le_bytes());
        OutItem::Tx(Hash(b))
    };
    let mut queued = Vec::new();
    for n in 0..600u32 {
        let dest = dests[n as usize % 3];
        let Enqueued::Added(id) = ob.enqueue(&mut store, 0, dest, item(n), None).unwrap() else {
            panic!("not added")
        };
        queued.push((id, dest, item(n)));
    }
    for (i, (id, _, _)) in queued.iter().enumerate() {
        if i % 6 != 0 {
            assert!(ob.delivered(&mut store, *id).unwrap().is_some());
        }
    }
    let left: Vec<_> = queued.iter().step_by(6).copied().collect();
    let ids: Vec<u64> = left.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ob.items().map(|it| it.id).collect::<Vec<_>>(), ids);
    assert_eq!(ob.len(), 100);
    assert_eq!(ob.pending(), 100);
    for (id, dest, what) in &left {
        let it = ob.get(*id).unwrap();
        assert_eq!((it.dest, it.item), (*dest, *what));
        assert_eq!(ob.find(*dest, *what).map(|it| it.id), Some(*id));
    }
    for (id, _, _) in queued.iter().skip(1).step_by(6) {
        assert!(ob.get(*id).is_none());
    }
    let again = Outbox::load(&store).unwrap();
    assert_eq!(again.items().map(|it| it.id).collect::<Vec<_>>(), ids);
    let Enqueued::Added(new) = ob
        .enqueue(&mut store, 0, dests[0], item(9999), None)
        .unwrap()
    else {
        panic!("not added")
    };
    assert_eq!(ob.items().last().map(|it| it.id), Some(new));
    assert_eq!(ob.ids_for_dest(dests[0]).last(), Some(new));
}
