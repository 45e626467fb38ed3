//! The JSON Schema of `spec.yaml`, for editors (e.g. the YAML language server's
//! `# yaml-language-server: $schema=...` comment). The committed copy is `spec.schema.json`.

use crate::model::KitSpec;

/// The JSON Schema (draft 2020-12) of `spec.yaml`.
///
/// Editors check structure and names with it; [`Kit::parse`](crate::Kit::parse) remains the
/// authority (for example on domain patterns and on contradictions between fields).
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(KitSpec).to_value();
    // Kind-dependent fields, which derive cannot express.
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "allOf".into(),
            serde_json::json!([
                {
                    "if": {"properties": {"kind": {"const": "agent"}}, "required": ["kind"]},
                    "then": {"required": ["agent"]}
                },
                {
                    "if": {"properties": {"kind": {"const": "mixin"}}, "required": ["kind"]},
                    "then": {"not": {"required": ["agent"]}}
                }
            ]),
        );
    }
    schema
}

/// [`json_schema`] as pretty-printed JSON with a trailing newline, as committed in
/// `spec.schema.json`.
pub fn json_schema_string() -> String {
    let mut s = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate;

    fn properties<'a>(schema: &'a serde_json::Value, def: Option<&str>) -> Vec<&'a str> {
        let node = match def {
            None => schema,
            Some(d) => &schema["$defs"][d],
        };
        let mut names: Vec<&str> = node["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no properties in {def:?}"))
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    fn sorted(fields: &[&'static str]) -> Vec<&'static str> {
        let mut v = fields.to_vec();
        v.sort_unstable();
        v
    }

    /// The schema comes from the model and the validator has its own field lists: they must
    /// name the same fields.
    #[test]
    fn schema_and_validator_agree_on_field_names() {
        let s = json_schema();
        assert_eq!(properties(&s, None), sorted(validate::TOP_FIELDS));
        assert_eq!(
            properties(&s, Some("AgentSpec")),
            sorted(validate::AGENT_FIELDS)
        );
        assert_eq!(
            properties(&s, Some("NetworkSpec")),
            sorted(validate::NETWORK_FIELDS)
        );
        assert_eq!(
            properties(&s, Some("CredentialSpec")),
            sorted(validate::CREDENTIAL_FIELDS)
        );
        assert_eq!(
            properties(&s, Some("EnvironmentSpec")),
            sorted(validate::ENVIRONMENT_FIELDS)
        );
        assert_eq!(
            properties(&s, Some("CommandsSpec")),
            sorted(validate::COMMANDS_FIELDS)
        );
        assert_eq!(
            properties(&s, Some("CommandSpec")),
            sorted(validate::COMMAND_FIELDS)
        );
        assert_eq!(
            properties(&s, Some("FileSpec")),
            sorted(validate::FILE_FIELDS)
        );
    }

    #[test]
    fn required_fields() {
        let s = json_schema();
        let mut req: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        req.sort_unstable();
        assert_eq!(req, ["kind", "name", "schemaVersion"]);
        assert_eq!(s["additionalProperties"], serde_json::json!(false));
    }
}
