//! The committed `spec.schema.json` is what the generator produces.
//!
//! After changing the model, regenerate it with
//! `SBX_BLESS=1 cargo test -p sbx-kit --test schema`.

#[test]
fn committed_schema_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("spec.schema.json");
    let generated = sbx_kit::json_schema_string();
    if std::env::var_os("SBX_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale; regenerate it with SBX_BLESS=1 cargo test -p sbx-kit --test schema",
        path.display()
    );
}

#[test]
fn schema_describes_the_format() {
    let s = sbx_kit::json_schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(
        s["properties"]["schemaVersion"]["$ref"],
        "#/$defs/SchemaVersion"
    );
    assert_eq!(s["$defs"]["SchemaVersion"]["oneOf"][0]["const"], "1");
    assert_eq!(s["$defs"]["Kind"]["oneOf"][0]["const"], "agent");
    assert_eq!(s["$defs"]["Kind"]["oneOf"][1]["const"], "mixin");
    assert_eq!(s["$defs"]["DomainPattern"]["type"], "string");
    // A mixin may not have `agent`; an agent must.
    let all_of = s["allOf"].as_array().unwrap();
    assert_eq!(all_of[0]["then"]["required"], serde_json::json!(["agent"]));
    assert_eq!(
        all_of[1]["then"]["not"]["required"],
        serde_json::json!(["agent"])
    );
}
