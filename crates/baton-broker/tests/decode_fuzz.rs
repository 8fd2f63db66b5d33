//! A short fuzz run of the request decoder: no input may panic it, and every valid-looking
//! request either decodes or is refused with a message.

use baton_broker::protocol::decode;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

const COMMANDS: &[&str] = &[
    "ready",
    "completed",
    "goodbye",
    "touch",
    "enqueue",
    "notify",
    "fetch",
    "last",
    "status",
    "cancel",
    "quit",
    "other",
];
const FIELDS: &[&str] = &[
    "queue",
    "worker_name",
    "job_id",
    "status",
    "result",
    "ready",
    "token",
    "retry",
    "timeout",
    "job",
    "priority",
    "delay",
    "retry_count",
    "retry_delay",
];

fn request() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(COMMANDS),
        prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..8),
        prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..6),
    )
        .prop_map(|(command, fields, job)| {
            let mut object: Map<String, Value> = fields
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
            object.insert(
                "job".into(),
                Value::Object(
                    job.into_iter()
                        .map(|(name, value)| (name.to_owned(), value))
                        .collect(),
                ),
            );
            object.insert("command".into(), json!(command));
            Value::Object(object)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn arbitrary_requests_decode_or_say_why(request in request()) {
        if let Err(error) = decode(request.to_string().as_bytes()) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn truncated_requests_never_panic(request in request(), cut in 0usize..200) {
        let text = request.to_string();
        let cut = cut.min(text.len());
        let _ = decode(&text.as_bytes()[..cut]);
    }
}
