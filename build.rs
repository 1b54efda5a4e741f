//! Build steps: compile the wire protocol (no system protoc needed), write
//! the C header, and give the shared library its SONAME and export list.

use std::collections::HashMap;
use std::env;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());

    // The shared library: SONAME carries the major version; export fm_* only.
    let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libflowmesh.so.{major}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={}", root.join("flowmesh.map").display());
    println!("cargo:rerun-if-changed=flowmesh.map");

    compile_protos(&root);
    generate_header(&root);
}

fn compile_protos(root: &Path) {
    let proto_dir = root.join("proto");
    println!("cargo:rerun-if-changed=proto");
    let files: Vec<PathBuf> = std::fs::read_dir(proto_dir.join("flowmesh/v1"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "proto")).collect()
        })
        .unwrap_or_default();
    assert!(!files.is_empty(), "no .proto files under proto/flowmesh/v1");
    let fds = protox::compile(&files, [&proto_dir]).expect("proto files compile");
    tonic_prost_build::configure().bytes(".").compile_fds(fds).expect("generate gRPC code");
}

fn generate_header(root: &Path) {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=src/error.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let renamed: HashMap<String, String> =
        config.export.rename.iter().map(|(rust, c)| (c.clone(), rust.clone())).collect();
    match cbindgen::Builder::new().with_crate(root).with_config(config).generate() {
        Ok(bindings) => {
            let mut raw = Vec::new();
            bindings.write(&mut raw);
            let text = String::from_utf8(raw).expect("cbindgen writes UTF-8");
            let grouped = group_by_area(&text, root, &renamed).unwrap_or(text);
            let path = root.join("include/flowmesh.h");
            if std::fs::read_to_string(&path).ok().as_deref() != Some(grouped.as_str()) {
                std::fs::write(&path, grouped).expect("write include/flowmesh.h");
            }
        }
        Err(e) => println!("cargo:warning=cbindgen could not generate include/flowmesh.h: {e}"),
    }
}

/// Header sections in order: (source file under src/, title). Files of
/// src/ffi not listed get a section of their own after these, titled by
/// their first doc line.
const SECTIONS: &[(&str, &str)] = &[
    ("error.rs", "Status codes, errors, version"),
    ("ffi/mod.rs", "Status codes, errors, version"),
    ("ffi/args.rs", "Shared types: headers, outgoing messages, byte buffers"),
    ("ffi/options.rs", "Options: string key/value settings of connect, subscribe and stream create"),
    ("ffi/client.rs", "Client: connect, health, connection state, close"),
    ("ffi/stream.rs", "Streams: publish, read, subscribe, consumer-group offsets"),
    ("ffi/queue.rs", "Queues: enqueue, reserve, ack/nack, retry policy, dead-letter queue"),
    ("ffi/kv.rs", "Key-value: set/get/delete/exists, list keys, compare-and-set, watch"),
    ("ffi/events.rs", "Events to named recipients"),
    ("ffi/metrics.rs", "Metrics"),
];

/// Regroups cbindgen's output (all types, then all functions) by area, the
/// way rdkafka.h reads: the opaque handle types first, then one section per
/// source file with its types and functions and a short title. `None` when
/// the output does not have the expected shape (it is then written as is).
fn group_by_area(text: &str, root: &Path, renamed: &HashMap<String, String>) -> Option<String> {
    const CPP_OPEN: &str = "#ifdef __cplusplus\nextern \"C\" {\n#endif // __cplusplus\n";
    const CPP_CLOSE: &str = "#ifdef __cplusplus\n}  // extern \"C\"\n#endif  // __cplusplus\n";
    let includes_end = text.find("#include <stdint.h>\n")? + "#include <stdint.h>\n".len();
    let guard_end = text.rfind("#endif  /* FLOWMESH_H */")?;
    let body = text[includes_end..guard_end].replacen(CPP_OPEN, "", 1).replacen(CPP_CLOSE, "", 1);

    // Where each name is defined: source file (relative to src/) by item name.
    let mut files: Vec<String> = SECTIONS.iter().map(|(f, _)| f.to_string()).collect();
    let mut extra: Vec<String> = std::fs::read_dir(root.join("src/ffi"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".rs"))
        .map(|f| format!("ffi/{f}"))
        .filter(|f| !files.contains(f))
        .collect();
    extra.sort();
    files.extend(extra);
    let mut home: HashMap<String, usize> = HashMap::new();
    let mut titles: Vec<String> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let src = std::fs::read_to_string(root.join("src").join(file)).unwrap_or_default();
        let title = SECTIONS.iter().find(|(f, _)| f == file).map(|(_, t)| t.to_string()).unwrap_or_else(|| {
            let first = src.lines().find_map(|l| l.strip_prefix("//!")).unwrap_or(file).trim();
            first.trim_end_matches('.').replace('`', "")
        });
        titles.push(title);
        for line in src.lines() {
            let words: Vec<&str> = line.split(|c: char| !(c.is_alphanumeric() || c == '_')).collect();
            for pair in words.windows(2) {
                if matches!(pair[0], "fn" | "struct" | "enum" | "type" | "const") && !pair[1].is_empty() {
                    home.entry(pair[1].to_string()).or_insert(i);
                }
            }
        }
    }

    let mut handles = Vec::new();
    let mut sections: Vec<Vec<String>> = vec![Vec::new(); files.len()];
    for item in body.split("\n\n").map(|i| i.trim_matches('\n')).filter(|i| !i.is_empty()) {
        let decl: String = item.lines().filter(|l| !l.starts_with("//")).collect::<Vec<_>>().join("\n");
        let name = declared_name(&decl)?;
        if decl.starts_with("typedef struct") && decl.ends_with(&format!(" {name};")) && !decl.contains('{') {
            handles.push(item.to_string());
            continue;
        }
        let rust = renamed.get(&name).unwrap_or(&name);
        let section = *home.get(rust).or_else(|| home.get(&name))?;
        sections[section].push(item.to_string());
    }

    let mut out = String::from(&text[..includes_end]);
    out.push_str("\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    out.push_str(&banner("Handles: opaque types, used only through pointers"));
    for h in &handles {
        out.push_str(h);
        out.push_str("\n\n");
    }
    let mut last_title = "";
    for (i, items) in sections.iter().enumerate() {
        if items.is_empty() {
            continue;
        }
        if titles[i] != last_title {
            out.push_str(&banner(&titles[i]));
            last_title = &titles[i];
        }
        for item in items {
            out.push_str(item);
            out.push_str("\n\n");
        }
    }
    out.push_str("#ifdef __cplusplus\n}  // extern \"C\"\n#endif\n\n");
    out.push_str(&text[guard_end..]);
    Some(out)
}

/// The name an item of the header declares.
fn declared_name(decl: &str) -> Option<String> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    if let Some(rest) = decl.strip_prefix("#define ") {
        return Some(ident(rest));
    }
    if let Some(rest) = decl.strip_prefix("typedef") {
        if let Some(i) = rest.find("(*") {
            return Some(ident(&rest[i + 2..]));
        }
        if rest.trim_start().starts_with("struct") || rest.trim_start().starts_with("enum") || !rest.contains('{') {
            let last = decl.trim_end().trim_end_matches(';');
            return Some(last.rsplit(|c: char| !(c.is_alphanumeric() || c == '_')).next()?.to_string());
        }
    }
    if let Some(rest) = decl.strip_prefix("enum ") {
        return Some(ident(rest));
    }
    let open = decl.find('(')?;
    let before = decl[..open].trim_end();
    Some(before.rsplit(|c: char| !(c.is_alphanumeric() || c == '_')).next()?.to_string())
}

fn banner(title: &str) -> String {
    let line = format!("// ---- {title} ");
    let pad = 78usize.saturating_sub(line.len());
    format!("{line}{}\n\n", "-".repeat(pad.max(4)))
}
