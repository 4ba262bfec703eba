//! docs/openapi.json describes exactly the operations, fields and scopes of the code. (That the
//! running server answers as documented is checked end to end in tests/server_api.rs.)

use std::collections::BTreeSet;

use gatehouse_api::OpKind;
use serde_json::Value;

fn document() -> Value {
    let text = include_str!("../../../docs/openapi.json");
    serde_json::from_str(text).expect("docs/openapi.json is JSON")
}

fn schema<'a>(doc: &'a Value, reference: &Value) -> &'a Value {
    let pointer = reference["$ref"].as_str().expect("a $ref").trim_start_matches('#');
    doc.pointer(pointer).expect("the $ref resolves")
}

#[test]
fn every_operation_is_documented_and_every_documented_operation_exists() {
    let doc = document();
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter_map(|p| p.strip_prefix("/api/v1/"))
        .map(str::to_owned)
        .collect();
    let mut code: BTreeSet<String> = OpKind::ALL.iter().map(|k| k.name().to_owned()).collect();
    code.insert("batch".to_owned());
    assert_eq!(documented, code);
}

#[test]
fn each_documented_request_has_exactly_the_fields_and_scope_of_the_code() {
    let doc = document();
    for kind in OpKind::ALL {
        let operation = &doc["paths"][format!("/api/v1/{}", kind.name())]["post"];
        let request = schema(&doc, &operation["requestBody"]["content"]["application/json"]["schema"]);
        assert_eq!(request["additionalProperties"], Value::Bool(false), "{}", kind.name());
        let documented: BTreeSet<&str> = request["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let code: BTreeSet<&str> = gatehouse_api::json::field_names(*kind).into_iter().collect();
        assert_eq!(documented, code, "fields of {}", kind.name());
        assert_eq!(operation["tags"][0], kind.scope().as_str(), "scope of {}", kind.name());
        let example = &operation["requestBody"]["content"]["application/json"]["example"];
        let call =
            gatehouse_api::json::parse_body(*kind, example.to_string().as_bytes(), &gatehouse_api::Limits::default());
        assert!(
            call.is_ok(),
            "the example of {} is refused: {:?}",
            kind.name(),
            call.err()
        );
    }
}
