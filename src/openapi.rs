//! The OpenAPI 3 document of the REST shim, served at `/api/v1/openapi.json`. Paths come from
//! [`rest::ROUTES`](crate::rest::ROUTES) (the same table a test checks against the routes the
//! router serves); schemas are generated from the proto descriptors in the proto3 JSON mapping the
//! shim speaks (snake_case names, 64-bit integers as strings, enums by name, timestamps as RFC 3339
//! strings), so the document cannot drift from the messages.

use std::sync::OnceLock;

use prost::Message;
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};
use serde_json::{Map, Value, json};

use crate::rest::{ROUTES, RouteDoc};

/// The document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

fn build() -> Value {
    let files = FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
    let mut schemas = Map::new();
    let mut enums = Map::new();
    for file in &files.file {
        let package = file.package();
        for message in &file.message_type {
            collect(&mut schemas, &mut enums, package, message);
        }
        for e in &file.enum_type {
            enums.insert(
                format!(".{package}.{}", e.name()),
                json!(e.value.iter().map(|v| v.name()).collect::<Vec<_>>()),
            );
        }
    }
    // Enum references become inline string enums.
    let schemas: Map<String, Value> =
        schemas.into_iter().map(|(name, schema)| (name, resolve_enums(schema, &enums))).collect();
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths.entry(route.path.to_owned()).or_insert_with(|| json!({}));
        entry[route.method] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "runwarden REST shim",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The REST/JSON face of runwarden's gRPC services, in the proto3 JSON mapping: snake_case \
                field names, every field present in responses, 64-bit integers as strings (numbers accepted on \
                input), enums by name, timestamps in RFC 3339. Errors are {code, status, message, details}."
        },
        "paths": paths,
        "components": {"schemas": schemas}
    })
}

fn collect(schemas: &mut Map<String, Value>, enums: &mut Map<String, Value>, prefix: &str, message: &DescriptorProto) {
    let full = format!("{prefix}.{}", message.name());
    for e in &message.enum_type {
        enums.insert(format!(".{full}.{}", e.name()), json!(e.value.iter().map(|v| v.name()).collect::<Vec<_>>()));
    }
    let maps: Vec<&DescriptorProto> =
        message.nested_type.iter().filter(|n| n.options.as_ref().is_some_and(|o| o.map_entry())).collect();
    for nested in message.nested_type.iter().filter(|n| !n.options.as_ref().is_some_and(|o| o.map_entry())) {
        collect(schemas, enums, &full, nested);
    }
    let mut properties = Map::new();
    for field in &message.field {
        let map_entry = maps.iter().find(|m| field.type_name().ends_with(&format!(".{}", m.name())));
        let schema = match map_entry {
            Some(entry) => {
                let value = entry.field.iter().find(|f| f.number() == 2).map_or(json!({}), field_schema);
                json!({"type": "object", "additionalProperties": value})
            }
            None if field.label() == Label::Repeated => json!({"type": "array", "items": field_schema(field)}),
            None => field_schema(field),
        };
        properties.insert(field.name().to_owned(), schema);
    }
    schemas.insert(schema_name(&format!(".{full}")), json!({"type": "object", "properties": properties}));
}

/// `.runwarden.v1.ExecutionReport` → `runwarden.v1.ExecutionReport`.
fn schema_name(type_name: &str) -> String {
    type_name.trim_start_matches('.').to_owned()
}

fn field_schema(field: &FieldDescriptorProto) -> Value {
    match field.r#type() {
        Type::Double | Type::Float => json!({"type": "number"}),
        Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
            json!({"oneOf": [{"type": "string", "pattern": "^-?[0-9]+$"}, {"type": "integer"}]})
        }
        Type::Uint64 | Type::Fixed64 => {
            json!({"oneOf": [{"type": "string", "pattern": "^[0-9]+$"}, {"type": "integer"}]})
        }
        Type::Int32 | Type::Sint32 | Type::Sfixed32 => json!({"type": "integer", "format": "int32"}),
        Type::Uint32 | Type::Fixed32 => json!({"type": "integer", "format": "int32", "minimum": 0}),
        Type::Bool => json!({"type": "boolean"}),
        Type::String => json!({"type": "string"}),
        Type::Bytes => json!({"type": "string", "format": "byte"}),
        Type::Enum => json!({"x-enum": field.type_name()}),
        Type::Message | Type::Group => match field.type_name() {
            ".google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            ".google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
            ".google.protobuf.Value" => json!({}),
            ".google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
            other => json!({"$ref": format!("#/components/schemas/{}", schema_name(other))}),
        },
    }
}

fn resolve_enums(schema: Value, enums: &Map<String, Value>) -> Value {
    match schema {
        Value::Object(mut object) => {
            if let Some(Value::String(name)) = object.get("x-enum") {
                let names = enums.get(name).cloned().unwrap_or(json!([]));
                return json!({"type": "string", "enum": names});
            }
            for value in object.values_mut() {
                *value = resolve_enums(std::mem::take(value), enums);
            }
            Value::Object(object)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|v| resolve_enums(v, enums)).collect()),
        other => other,
    }
}

fn operation(route: &RouteDoc) -> Value {
    let mut parameters = Vec::new();
    for segment in route.path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            parameters.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
        }
    }
    for (name, description) in route.query {
        parameters.push(json!({"name": name, "in": "query", "required": false, "description": description,
            "schema": {"type": "string"}}));
    }
    let reference = |message: &str| json!({"$ref": format!("#/components/schemas/runwarden.v1.{message}")});
    let error = json!({"description": "an error: {code, status, message, details}", "content": {"application/json":
        {"schema": {"type": "object", "properties": {"code": {"type": "integer"}, "status": {"type": "string"},
        "message": {"type": "string"}, "details": {"type": "array"}}}}}});
    let mut op = json!({
        "operationId": route.operation,
        "summary": route.summary,
        "parameters": parameters,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": reference(route.response)}}},
            "400": error.clone(), "404": error.clone(), "413": error.clone(), "429": error.clone(), "503": error
        }
    });
    if let Some(body) = route.body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": reference(body)}}});
    }
    op
}
