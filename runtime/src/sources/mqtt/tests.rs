//! Tests of the MQTT source: remote commands, dedupe, rule messages.

use super::*;
use crate::mqtt::link::Backoff;
use crate::mqtt::options::Connect;
use crate::mqtt::session;
use std::sync::Mutex;

/// An inbound side for node `n1` whose session never reaches a broker.
fn inbound(
    run: Arc<dyn Fn(CommandRequest) + Send + Sync>,
    ingest: mpsc::Sender<Ingested>,
    shutdown: Shutdown,
) -> (Inbound, mpsc::Receiver<MqttMessage>, Store) {
    inbound_with(
        run,
        ingest,
        shutdown,
        Senders::from_keys([], Duration::from_secs(600), false),
    )
}

fn inbound_with(
    run: Arc<dyn Fn(CommandRequest) + Send + Sync>,
    ingest: mpsc::Sender<Ingested>,
    shutdown: Shutdown,
    senders: Senders,
) -> (Inbound, mpsc::Receiver<MqttMessage>, Store) {
    let config = crate::config::Config::parse(
        "[mqtt]\nbroker = \"mqtt://127.0.0.1:1\"\n",
        std::path::Path::new("t.toml"),
        std::path::Path::new("/"),
    )
    .unwrap();
    let m = config.mqtt.unwrap();
    let store = Store::in_memory().unwrap();
    let never = Duration::from_secs(3600);
    let (_session, handle) = Session::new(session::Parts {
        connect: Connect::from_config(&m, "n1").unwrap(),
        backoff: Backoff {
            first: never,
            max: never,
        },
        store: store.clone(),
        qos: 1,
        status_topic: "medic/n1/status".into(),
        outbox_limit: crate::store::OutboxLimit {
            messages: 100,
            bytes: 1 << 20,
        },
    })
    .unwrap();
    let parts = Parts {
        config: m,
        node: "n1".into(),
        store: store.clone(),
        session: handle,
        run,
        replace: Arc::new(|_| panic!("no config replacement in these tests")),
        ingest,
        shutdown,
        senders: Arc::new(senders),
        history: None,
        local_only: BTreeSet::from(["probe-disk".to_string()]),
    };
    let (inbound, rules) = Inbound::new(parts);
    (inbound, rules, store)
}

fn command(task_id: u32) -> Message {
    let json = format!(r#"{{"task_id": {task_id}, "service": "web", "command": "restart"}}"#);
    Message::for_test("medic/n1/command", json.as_bytes())
}

/// Signed commands: run once, a replay refused, the broker's redelivery not mistaken for
/// one, an unsigned request and one out of the sender's scope refused, each with its code.
#[tokio::test]
async fn signed_commands_run_once_and_everything_else_gets_its_code() {
    use ed25519_dalek::SigningKey;
    let key = SigningKey::from_bytes(&[7; 32]);
    let scope = crate::config::Sender {
        public_key_file: "k".into(),
        commands: vec!["web/*".into()],
        replace_config: false,
    };
    let senders = Senders::from_keys(
        [("ops".to_string(), key.verifying_key(), scope)],
        Duration::from_secs(600),
        true,
    );
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = asked.clone();
    let run = Arc::new(move |r: CommandRequest| {
        record.lock().unwrap().push(r.origin.to_string());
        r.reply.send(CommandResult::error(
            r.action_id,
            r.service,
            r.command,
            "test".into(),
        ));
    });
    let (ingest, _rx) = mpsc::channel(8);
    let (mut inbound, _rules, store) =
        inbound_with(run, ingest, crate::shutdown::channel().1, senders);
    let signer = signed::Signer::from_key("ops", key);
    let sign = |task: u64, service: &str| {
        signer.sign(
            lcm::command_request(task, service, "restart"),
            "n1",
            Duration::from_secs(60),
        )
    };
    let at = |payload: &[u8]| Message::for_test("medic/n1/command", payload);
    let first = sign(1, "web");
    inbound.on_message(&at(&first));
    inbound.on_message(&at(&first));
    let mut redelivered = at(&first);
    redelivered.dup = true;
    inbound.on_message(&redelivered);
    inbound.on_message(&command(2));
    inbound.on_message(&at(&sign(3, "db")));
    assert_eq!(
        *asked.lock().unwrap(),
        ["mqtt:ops:1"],
        "run once, naming the sender"
    );
    let codes: Vec<(i64, i64)> = store
        .outbox_after(0, 10)
        .unwrap()
        .iter()
        .map(|m| {
            let reply: Value = serde_json::from_slice(&m.payload).unwrap();
            (
                reply["task_id"].as_i64().unwrap(),
                reply["code"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (1, code::CANNOT_START),
            (1, code::REPLAYED),
            (2, code::UNSIGNED),
            (3, code::OUT_OF_SCOPE)
        ]
    );
}

/// A probe's service is not a remote command's to run unless the probe says so.
#[tokio::test]
async fn a_probe_is_refused_to_remote_commands() {
    let ran: Arc<Mutex<usize>> = Arc::default();
    let count = ran.clone();
    let run = Arc::new(move |r: CommandRequest| {
        *count.lock().unwrap() += 1;
        r.reply.send(CommandResult::error(
            r.action_id,
            r.service,
            r.command,
            "t".into(),
        ));
    });
    let (ingest, _rx) = mpsc::channel(8);
    let (mut inbound, _rules, store) = inbound(run, ingest, crate::shutdown::channel().1);
    let json = r#"{"task_id": 9, "service": "probe-disk", "command": "check"}"#;
    inbound.on_message(&Message::for_test("medic/n1/command", json.as_bytes()));
    assert_eq!(*ran.lock().unwrap(), 0);
    let outbox = store.outbox_after(0, 10).unwrap();
    let reply: Value = serde_json::from_slice(&outbox[0].payload).unwrap();
    assert_eq!(reply["code"], code::REFUSED);
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("[probes.disk] remote = true"),
        "{reply}"
    );
}

/// However full the way to the rules is, a remote command is still run and answered: rule
/// messages past the buffer are dropped and counted, the command is not held behind them.
#[tokio::test]
async fn a_full_engine_queue_never_stalls_remote_commands() {
    // An ingest queue that is full and never read: the dispatcher is busy.
    let (ingest, _never_read) = mpsc::channel(1);
    let busy = MqttMessage {
        topic: "x".into(),
        payload: vec![],
    };
    ingest.try_send(Ingested::Mqtt(busy)).unwrap();
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = asked.clone();
    let run = Arc::new(move |r: CommandRequest| {
        record
            .lock()
            .unwrap()
            .push(format!("{}/{}", r.service, r.command));
        r.reply.send(CommandResult::error(
            r.action_id,
            r.service,
            r.command,
            "test".into(),
        ));
    });
    let (mut inbound, _rules, store) = inbound(run, ingest, crate::shutdown::channel().1);
    for i in 0..(RULE_BUFFER + 10) {
        let m = Message::for_test("sensors/t", format!("{i}").as_bytes());
        assert_eq!(inbound.on_message(&m), Handled::Done);
    }
    assert_eq!(inbound.rule_drops, 10);
    assert_eq!(inbound.on_message(&command(7)), Handled::Done);
    assert_eq!(*asked.lock().unwrap(), vec!["web/restart".to_string()]);
    let outbox = store.outbox_after(0, 10).unwrap();
    assert_eq!(outbox.len(), 1, "the result waits in the outbox");
    assert_eq!(outbox[0].topic, "medic/n1/result");
    let reply: serde_json::Value = serde_json::from_slice(&outbox[0].payload).unwrap();
    assert_eq!(reply["task_id"], 7);
}

#[tokio::test]
async fn after_shutdown_commands_stay_with_the_broker() {
    let (ingest, _rx) = mpsc::channel(8);
    let (mut trigger, shutdown) = crate::shutdown::channel();
    let run = Arc::new(|_: CommandRequest| panic!("nothing runs after shutdown"));
    let (mut inbound, _rules, store) = inbound(run, ingest, shutdown);
    trigger.fire();
    assert_eq!(inbound.on_message(&command(8)), Handled::Leave);
    assert_eq!(store.outbox_len().unwrap(), 0);
}
