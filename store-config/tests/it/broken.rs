//! A table of broken registry files: each error has the right kind and names the file, the
//! entry, the field and the line.

use store_config::{ConfigError, Registry};
use store_core::ErrorKind;

struct Case {
    /// The `entries:` items (indented by 2), after `namespace: app`.
    entries: &'static str,
    kind: ErrorKind,
    /// The entry id the error names (`None` for file-level errors).
    entry: Option<&'static str>,
    field: &'static str,
    /// 1-based line the error points at.
    line: usize,
    /// Other text the message must contain.
    says: &'static [&'static str],
}

const fn case(
    entries: &'static str,
    kind: ErrorKind,
    entry: Option<&'static str>,
    field: &'static str,
    line: usize,
    says: &'static [&'static str],
) -> Case {
    Case {
        entries,
        kind,
        entry,
        field,
        line,
        says,
    }
}

use ErrorKind::{AlreadyExists, Invalid, NotFound};

const CASES: &[Case] = &[
    // 1-10: kinds and store.memory fields (the entry starts on line 3)
    case(
        "  - name: c\n    kind: store.memroy\n",
        Invalid,
        Some("app:c"),
        "kind",
        4,
        &[
            "unknown kind `store.memroy`",
            "did you mean `store.memory`",
            "known kinds: store.memory, store.sql",
        ],
    ),
    case(
        "  - name: c\n    max_size: 1\n",
        Invalid,
        Some("app:c"),
        "kind",
        3,
        &["missing field `kind`", "known kinds"],
    ),
    case(
        "  - name: c\n    kind: store.memory\n    max_sise: 10\n",
        Invalid,
        Some("app:c"),
        "max_sise",
        5,
        &["unknown field `max_sise`, did you mean `max_size`?"],
    ),
    case(
        "  - name: c\n    kind: store.memory\n    colour: red\n",
        Invalid,
        Some("app:c"),
        "colour",
        5,
        &["store.memory fields: max_size, cleanup_interval, max_value_size"],
    ),
    case(
        "  - name: c\n    kind: store.memory\n    max_size: -1\n",
        Invalid,
        Some("app:c"),
        "max_size",
        5,
        &["max_size -1: must not be negative"],
    ),
    case(
        "  - name: c\n    kind: store.memory\n    max_size: lots\n",
        Invalid,
        Some("app:c"),
        "max_size",
        5,
        &["invalid type"],
    ),
    case(
        "  - name: c\n    kind: store.memory\n    cleanup_interval: 30\n",
        Invalid,
        Some("app:c"),
        "cleanup_interval",
        5,
        &["a bare number has no unit", "\"30s\""],
    ),
    case(
        "  - name: c\n    kind: store.memory\n    cleanup_interval: 5x\n",
        Invalid,
        Some("app:c"),
        "cleanup_interval",
        5,
        &["unknown unit \"x\"", "\"1h30m\""],
    ),
    case(
        "  - name: c\n    kind: store.memory\n    cleanup_interval: -1\n",
        Invalid,
        Some("app:c"),
        "cleanup_interval",
        5,
        &["must not be negative"],
    ),
    case(
        "  - name: c\n    kind: store.memory\n    max_value_size: big\n",
        Invalid,
        Some("app:c"),
        "max_value_size",
        5,
        &["invalid type"],
    ),
    // 11-22: store.sql (after the database entry on lines 3-5, the store starts on line 6)
    case(
        concat!(
            "  - name: db\n    kind: db.sql.sqlite\n    path: ':memory:'\n",
            "  - name: s\n    kind: store.sql\n    database: db\n"
        ),
        Invalid,
        Some("app:s"),
        "table_name",
        6,
        &["missing field `table_name`"],
    ),
    case(
        "  - name: s\n    kind: store.sql\n    table_name: kv\n",
        Invalid,
        Some("app:s"),
        "database",
        3,
        &["missing: give the id of a db.sql.sqlite or db.sql.postgres entry"],
    ),
    case(
        "  - name: s\n    kind: store.sql\n    database: app:nope\n    table_name: kv\n",
        NotFound,
        Some("app:s"),
        "database",
        5,
        &["no entry `app:nope` (dangling reference)"],
    ),
    case(
        concat!(
            "  - name: main_db\n    kind: db.sql.sqlite\n    path: ':memory:'\n",
            "  - name: s\n    kind: store.sql\n    database: app:main_dbb\n    table_name: kv\n"
        ),
        NotFound,
        Some("app:s"),
        "database",
        8,
        &["no entry `app:main_dbb` (dangling reference), did you mean `app:main_db`?"],
    ),
    case(
        concat!(
            "  - name: m\n    kind: store.memory\n",
            "  - name: s\n    kind: store.sql\n    database: m\n    table_name: kv\n"
        ),
        Invalid,
        Some("app:s"),
        "database",
        7,
        &["`app:m` is a store.memory entry; expected db.sql.sqlite or db.sql.postgres"],
    ),
    case(
        concat!(
            "  - name: db\n    kind: db.sql.sqlite\n    path: ':memory:'\n",
            "  - name: s\n    kind: store.sql\n    database: db\n    table_name: kv store\n"
        ),
        Invalid,
        Some("app:s"),
        "table_name",
        9,
        &["table_name \"kv store\": must match ^[a-zA-Z][a-zA-Z0-9_]*$"],
    ),
    case(
        concat!(
            "  - name: db\n    kind: db.sql.sqlite\n    path: ':memory:'\n",
            "  - name: s\n    kind: store.sql\n    database: db\n    table_name: select\n"
        ),
        Invalid,
        Some("app:s"),
        "table_name",
        9,
        &["is an SQL reserved word"],
    ),
    case(
        concat!(
            "  - name: db\n    kind: db.sql.sqlite\n    path: ':memory:'\n",
            "  - name: s\n    kind: store.sql\n    database: db\n    table_name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
        ),
        Invalid,
        Some("app:s"),
        "table_name",
        9,
        &["64 characters, limit 63"],
    ),
    case(
        concat!(
            "  - name: db\n    kind: db.sql.sqlite\n    path: ':memory:'\n",
            "  - name: s\n    kind: store.sql\n    database: db\n    table_name: kv\n    id_column_name: 1key\n"
        ),
        Invalid,
        Some("app:s"),
        "id_column_name",
        10,
        &["id_column_name \"1key\""],
    ),
    case(
        concat!(
            "  - name: db\n    kind: db.sql.sqlite\n    path: ':memory:'\n",
            "  - name: s\n    kind: store.sql\n    database: db\n    table_name: kv\n    payload_column_name: 'v; DROP TABLE x'\n"
        ),
        Invalid,
        Some("app:s"),
        "payload_column_name",
        10,
        &["must match"],
    ),
    case(
        concat!(
            "  - name: db\n    kind: db.sql.sqlite\n    path: ':memory:'\n",
            "  - name: s\n    kind: store.sql\n    database: db\n    table_name: kv\n    version_column_name: key\n"
        ),
        Invalid,
        Some("app:s"),
        "version_column_name",
        10,
        &["same column as id_column_name"],
    ),
    case(
        concat!(
            "  - name: db\n    kind: db.sql.sqlite\n    path: ':memory:'\n",
            "  - name: s\n    kind: store.sql\n    database: db\n    table_name: kv\n    cleanup_interval: '10'\n"
        ),
        Invalid,
        Some("app:s"),
        "cleanup_interval",
        10,
        &["missing unit"],
    ),
    case(
        concat!(
            "  - name: db\n    kind: db.sql.sqlite\n    path: ':memory:'\n",
            "  - name: s\n    kind: store.sql\n    database: db\n    table_name: kv\n    create_table: sure\n"
        ),
        Invalid,
        Some("app:s"),
        "create_table",
        10,
        &["invalid type"],
    ),
    // 23-29: database entries
    case(
        "  - name: db\n    kind: db.sql.sqlite\n",
        Invalid,
        Some("app:db"),
        "path",
        3,
        &["missing field `path`"],
    ),
    case(
        "  - name: db\n    kind: db.sql.sqlite\n    pth: x.db\n",
        Invalid,
        Some("app:db"),
        "pth",
        5,
        &["did you mean `path`?"],
    ),
    case(
        "  - name: db\n    kind: db.sql.sqlite\n    path: ''\n",
        Invalid,
        Some("app:db"),
        "path",
        5,
        &["must not be empty"],
    ),
    case(
        "  - name: pg\n    kind: db.sql.postgres\n    url: postgres://h/d\n    tls: strict\n",
        Invalid,
        Some("app:pg"),
        "tls",
        6,
        &[
            "unknown variant `strict`",
            "`disable`",
            "`require`",
            "`verify-full`",
        ],
    ),
    case(
        "  - name: pg\n    kind: db.sql.postgres\n    url: postgres://db.example.com/d\n    ca_file: nowhere.pem\n",
        Invalid,
        Some("app:pg"),
        "ca_file",
        6,
        &["nowhere.pem", "cannot read it"],
    ),
    case(
        "  - name: db\n    kind: db.sql.sqlite\n    path: x.db\n    synchronous: fast\n",
        Invalid,
        Some("app:db"),
        "synchronous",
        6,
        &["unknown variant `fast`", "`normal`", "`full`"],
    ),
    case(
        "  - name: pg\n    kind: db.sql.postgres\n    pool_size: 4\n",
        Invalid,
        Some("app:pg"),
        "url",
        3,
        &["url: missing (or give url_env)"],
    ),
    case(
        "  - name: pg\n    kind: db.sql.postgres\n    url_env: STORE_CONFIG_TEST_SURELY_UNSET\n",
        Invalid,
        Some("app:pg"),
        "url_env",
        5,
        &["environment variable is not set"],
    ),
    case(
        "  - name: pg\n    kind: db.sql.postgres\n    url: postgres://h/d\n    url_env: X\n",
        Invalid,
        Some("app:pg"),
        "url",
        5,
        &["give only one"],
    ),
    case(
        "  - name: pg\n    kind: db.sql.postgres\n    url: postgres://h/d\n    pool_size: -1\n",
        Invalid,
        Some("app:pg"),
        "pool_size",
        6,
        &["invalid value"],
    ),
    // 30-36: names, ids, lifecycle, kinds not in this build
    case(
        "  - name: c\n    kind: store.memory\n  - name: c\n    kind: store.memory\n",
        AlreadyExists,
        Some("app:c"),
        "",
        5,
        &["duplicate entry id, first defined at broken.yaml:3, again at broken.yaml:5"],
    ),
    case(
        "  - name: bad name\n    kind: store.memory\n",
        Invalid,
        Some("app:bad name"),
        "name",
        3,
        &["must match"],
    ),
    case(
        "  - kind: store.memory\n",
        Invalid,
        None,
        "name",
        3,
        &["entry #1: missing field `name`"],
    ),
    case(
        "  - name: c\n    kind: store.memory\n    lifecycle:\n      autostart: true\n",
        Invalid,
        Some("app:c"),
        "lifecycle",
        5,
        &["unknown field `lifecycle.autostart`"],
    ),
    case(
        "  - name: c\n    kind: store.memory\n    lifecycle:\n      auto_start: yes please\n",
        Invalid,
        Some("app:c"),
        "lifecycle",
        5,
        &["must be true or false"],
    ),
    case(
        "  - name: r\n    kind: store.kv.crdt\n    namespace: 9lives\n",
        Invalid,
        Some("app:r"),
        "namespace",
        5,
        &["namespace \"9lives\": must match ^[a-z][a-z0-9._-]*$"],
    ),
    case(
        "  - name: r\n    kind: store.kv.crdt\n    namespace: cfg\n    durable: sometimes\n",
        Invalid,
        Some("app:r"),
        "durable",
        6,
        &["durable"],
    ),
    case(
        "  - name: r\n    kind: store.kv.raft\n    namespace: Bad\n",
        Invalid,
        Some("app:r"),
        "namespace",
        5,
        &["namespace \"Bad\": must match ^[a-z][a-z0-9._-]*$"],
    ),
    case(
        "  - name: r\n    kind: store.kv.raft\n    namespace: cfg\n    consistency: strong\n",
        Invalid,
        Some("app:r"),
        "consistency",
        6,
        &["unknown variant `strong`"],
    ),
    case(
        "  - name: c\n    kind: store.memory\n    database: db\n",
        Invalid,
        Some("app:c"),
        "database",
        5,
        &["unknown field `database`"],
    ),
];

fn load(entries: &str) -> Vec<ConfigError> {
    let yaml = format!("namespace: app\nentries:\n{entries}");
    match Registry::builder().load_str("broken.yaml", &yaml) {
        Ok(r) => panic!("loaded a broken config:\n{yaml}\n{r:?}"),
        Err(e) => e.0,
    }
}

#[test]
fn every_broken_entry_names_file_entry_field_and_line() {
    assert!(CASES.len() >= 30);
    for (n, c) in CASES.iter().enumerate() {
        let errors = load(c.entries);
        let e = errors
            .iter()
            .find(|e| e.kind == c.kind)
            .unwrap_or_else(|| panic!("case {}: no {:?} error in {errors:?}", n + 1, c.kind));
        let text = e.to_string();
        assert!(text.starts_with("broken.yaml:"), "case {}: {text}", n + 1);
        assert_eq!(e.line, Some(c.line), "case {}: {text}", n + 1);
        assert_eq!(e.entry.as_deref(), c.entry, "case {}: {text}", n + 1);
        if let Some(entry) = c.entry {
            assert!(
                text.contains(&format!("entry `{entry}`")),
                "case {}: {text}",
                n + 1
            );
        }
        if !c.field.is_empty() {
            assert!(
                text.contains(&format!("field `{}`", c.field)),
                "case {}: {text}",
                n + 1
            );
        }
        for s in c.says {
            assert!(
                text.contains(s),
                "case {}: {text}\n  should say: {s}",
                n + 1
            );
        }
    }
}

#[test]
fn file_level_problems_name_the_file_and_field() {
    let cases: &[(&str, &str, usize, &str)] = &[
        ("entries: []\n", "namespace", 0, "missing field `namespace`"),
        (
            "namespace: app\nentrys: []\n",
            "entrys",
            2,
            "did you mean `entries`?",
        ),
        (
            "namespace: 'a b'\nentries: []\n",
            "namespace",
            1,
            "must match",
        ),
        (
            "version: 1.0\nnamespace: app\n",
            "version",
            1,
            "must be a string: write version: \"1.0\"",
        ),
        (
            "namespace: app\nentries: 7\n",
            "entries",
            2,
            "must be a list of entries",
        ),
    ];
    for (yaml, field, line, says) in cases {
        let e = Registry::builder()
            .load_str("f.yaml", yaml)
            .unwrap_err()
            .0
            .remove(0);
        let text = e.to_string();
        assert_eq!(e.kind, ErrorKind::Invalid, "{text}");
        assert!(text.starts_with("f.yaml"), "{text}");
        assert!(text.contains(&format!("field `{field}`")), "{text}");
        assert_eq!(e.line.unwrap_or(0), *line, "{text}");
        assert!(text.contains(says), "{text}");
    }
}

#[test]
fn invalid_yaml_reports_the_parser_position() {
    let e = Registry::builder()
        .load_str("y.yaml", "namespace: app\nentries:\n  - name: [unclosed\n")
        .unwrap_err()
        .0
        .remove(0);
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.starts_with("invalid YAML"), "{e}");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.to_string().starts_with("y.yaml:4:"), "{e}");
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let broken_db = load(concat!(
        "  - name: db\n    kind: db.sql.sqlite\n    path: ''\n",
        "  - name: s\n    kind: store.sql\n    database: db\n    table_name: kv\n",
    ));
    assert_eq!(broken_db.len(), 2, "{broken_db:?}");
    assert!(
        broken_db[1].message.contains("`app:db` could not be built"),
        "{broken_db:?}"
    );
    let errors = load(concat!(
        "  - name: a\n    kind: store.memory\n    max_sise: 1\n",
        "  - name: b\n    kind: nope\n",
        "  - name: c\n    kind: store.memory\n    max_size: -3\n",
    ));
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn duplicate_ids_across_files_name_both_files() {
    let dir = store_testkit::TempDir::new("dup-ids");
    let entry = "namespace: app\nentries:\n  - name: c\n    kind: store.memory\n";
    std::fs::write(dir.join("a.yaml"), entry).unwrap();
    std::fs::write(dir.join("b.yaml"), entry).unwrap();
    let e = Registry::load(&[dir.path()]).unwrap_err().0.remove(0);
    assert_eq!(e.kind, AlreadyExists);
    let text = e.to_string();
    assert!(
        text.contains("a.yaml:3") && text.contains("b.yaml:3"),
        "{text}"
    );
    assert!(text.contains("entry `app:c`"), "{text}");
}
