//! Users, roles and permissions: the data model the core maintains from `system.hdb_user` and
//! `system.hdb_role`, the pure permission rules the HTTP layer applies, and Harper's checks of
//! a role's `permission` object (`permission_errors`, run by the core on add_role/alter_role).
//!
//! The core keeps an [`AuthState`] up to date with every committed (local or replicated) write to
//! those tables and publishes it; workers authenticate and authorise against the published copy.
//! Nothing here hashes or verifies passwords (that is I/O-free but slow, and lives in `ops::auth`).

use super::catalog::{Catalog, CREATED_TIME, UPDATED_TIME};
use super::error::OpError;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Built-in role id and name of the all-powerful role.
pub const SUPER_USER_ROLE: &str = "super_user";

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub username: String,
    pub password_hash: String,
    pub role_id: String,
    pub active: bool,
    /// The stored record, for `list_users` / `user_info` (secrets removed on output).
    pub record: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub permission: Value,
    pub record: Map<String, Value>,
}

/// Who is making a request, resolved by the HTTP layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub username: String,
    pub role: Option<Role>,
}

impl Principal {
    pub fn is_super_user(&self) -> bool {
        self.role.as_ref().is_some_and(Role::is_super_user)
    }
}

/// A table-level permission a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TablePerm {
    Read,
    Insert,
    Update,
    Delete,
}

impl TablePerm {
    pub fn name(self) -> &'static str {
        match self {
            TablePerm::Read => "read",
            TablePerm::Insert => "insert",
            TablePerm::Update => "update",
            TablePerm::Delete => "delete",
        }
    }
}

impl Role {
    pub fn is_super_user(&self) -> bool {
        self.permission
            .get("super_user")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Whether the role has a `structure_user` grant at all (true or a list of databases).
    pub fn is_structure_user(&self) -> bool {
        match self.permission.get("structure_user") {
            Some(Value::Bool(b)) => *b,
            Some(Value::Array(dbs)) => !dbs.is_empty(),
            _ => false,
        }
    }

    /// `structure_user: true` (all databases) or a list of databases the role may change the
    /// schema of.
    pub fn may_change_structure(&self, db: &str) -> bool {
        if self.is_super_user() {
            return true;
        }
        // `system` (users, password hashes, membership) is never a structure_user's database,
        // whatever the grant says.
        if db == crate::core::catalog::SYSTEM_DB {
            return false;
        }
        match self.permission.get("structure_user") {
            Some(Value::Bool(b)) => *b,
            Some(Value::Array(dbs)) => dbs.iter().any(|d| d.as_str() == Some(db)),
            _ => false,
        }
    }

    /// Whether the role grants `perm` on `db.table` (Harper's per-table CRUD flags; a
    /// structure_user has full access to the tables of its databases).
    pub fn allows(&self, db: &str, table: &str, perm: TablePerm) -> bool {
        if self.may_change_structure(db) {
            return true;
        }
        if db == crate::core::catalog::SYSTEM_DB && !self.is_super_user() {
            return false;
        }
        self.permission
            .get(db)
            .and_then(|d| d.get("tables"))
            .and_then(|t| t.get(table))
            .and_then(|t| t.get(perm.name()))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The attribute-level rules of `db.table`, or None when every attribute is open (a
    /// super_user, a structure_user of the database, or no `attribute_permissions`).
    pub fn attribute_rules(&self, db: &str, table: &str) -> Option<AttrRules> {
        if self.is_super_user() || self.may_change_structure(db) {
            return None;
        }
        let list = self
            .permission
            .get(db)?
            .get("tables")?
            .get(table)?
            .get("attribute_permissions")?
            .as_array()?;
        let flag = |o: &Value, k: &str| o.get(k).and_then(Value::as_bool).unwrap_or(false);
        let listed: Vec<AttrRule> = list
            .iter()
            .filter_map(|o| {
                Some(AttrRule {
                    name: o.get("attribute_name")?.as_str()?.to_string(),
                    read: flag(o, "read"),
                    insert: flag(o, "insert"),
                    update: flag(o, "update"),
                })
            })
            .collect();
        (!listed.is_empty()).then_some(AttrRules { listed })
    }

    /// Whether the role's permissions mention this database / table at all. Harper reports
    /// tables a role knows nothing of as if they did not exist (no existence leak).
    pub fn knows_database(&self, db: &str) -> bool {
        self.is_super_user() || self.may_change_structure(db) || self.permission.get(db).is_some()
    }

    pub fn knows_table(&self, db: &str, table: &str) -> bool {
        self.is_super_user()
            || self.may_change_structure(db)
            || self
                .permission
                .get(db)
                .and_then(|d| d.get("tables"))
                .and_then(|t| t.get(table))
                .is_some()
    }

    /// Databases and tables the role can read anything of (for describe_all filtering).
    pub fn can_see(&self, db: &str, table: &str) -> bool {
        if self.is_super_user() {
            return true;
        }
        [
            TablePerm::Read,
            TablePerm::Insert,
            TablePerm::Update,
            TablePerm::Delete,
        ]
        .iter()
        .any(|p| self.allows(db, table, *p))
    }
}

/// One entry of a table's `attribute_permissions`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrRule {
    pub name: String,
    pub read: bool,
    pub insert: bool,
    pub update: bool,
}

/// Harper's attribute-level permissions of one table for one role: once a table lists
/// attribute permissions, an attribute it does not list has none (timestamps included), and
/// the primary key, if not listed, has what any listed attribute has.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrRules {
    pub listed: Vec<AttrRule>,
}

impl AttrRules {
    fn flag(r: &AttrRule, perm: TablePerm) -> bool {
        match perm {
            TablePerm::Read => r.read,
            TablePerm::Insert => r.insert,
            TablePerm::Update => r.update,
            TablePerm::Delete => true,
        }
    }

    /// Whether `attr` of a table whose primary key is `pk` may be used for `perm`.
    pub fn allows(&self, attr: &str, pk: &str, perm: TablePerm) -> bool {
        match self.listed.iter().find(|r| r.name == attr) {
            Some(r) => Self::flag(r, perm),
            None => attr == pk && self.listed.iter().any(|r| Self::flag(r, perm)),
        }
    }

    /// Whether describe operations show `attr` to this role (Harper's `describe` flag: any of
    /// read, insert or update; a listed timestamp by its read flag alone, since timestamps are
    /// never written by clients; the unlisted primary key when any listed attribute shows).
    pub fn describes(&self, attr: &str, pk: &str) -> bool {
        let shows = |r: &AttrRule| {
            r.read || (r.name != CREATED_TIME && r.name != UPDATED_TIME && (r.insert || r.update))
        };
        match self.listed.iter().find(|r| r.name == attr) {
            Some(r) => shows(r),
            None => attr == pk && self.listed.iter().any(shows),
        }
    }

    /// The attributes `*` means for this role: the readable listed ones in their order, then
    /// the primary key when readable and not listed (Harper's order).
    pub fn readable(&self, pk: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .listed
            .iter()
            .filter(|r| r.read)
            .map(|r| r.name.clone())
            .collect();
        if !out.iter().any(|a| a == pk) && self.allows(pk, pk, TablePerm::Read) {
            out.push(pk.to_string());
        }
        out
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthState {
    pub users: HashMap<String, User>,
    pub roles: HashMap<String, Role>,
}

impl AuthState {
    pub fn role_by_name(&self, name: &str) -> Option<&Role> {
        self.roles.values().find(|r| r.name == name)
    }

    pub fn principal(&self, username: &str) -> Option<Principal> {
        let user = self.users.get(username)?;
        Some(Principal {
            username: user.username.clone(),
            role: self.roles.get(&user.role_id).cloned(),
        })
    }

    /// Applies a committed write to `system.hdb_user` (None = deleted).
    pub fn apply_user(&mut self, username: &str, record: Option<&Map<String, Value>>) {
        match record.and_then(user_from_record) {
            Some(u) => {
                self.users.insert(username.to_string(), u);
            }
            None => {
                self.users.remove(username);
            }
        }
    }

    /// Applies a committed write to `system.hdb_role` (None = deleted).
    pub fn apply_role(&mut self, id: &str, record: Option<&Map<String, Value>>) {
        match record.and_then(role_from_record) {
            Some(r) => {
                self.roles.insert(id.to_string(), r);
            }
            None => {
                self.roles.remove(id);
            }
        }
    }

    /// A role as `list_roles` (and `list_users`) shows it: Harper's key order (`permission`,
    /// `role`, `id`, then the timestamps), whatever order the stored record has.
    pub fn role_view(role: &Role) -> Value {
        let mut out = Map::new();
        for k in ["permission", "role", "id"] {
            if let Some(v) = role.record.get(k) {
                out.insert(k.to_string(), v.clone());
            }
        }
        for (k, v) in &role.record {
            if !out.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
        Value::Object(out)
    }

    /// A user as `list_users` shows it: secrets removed, role expanded to the role object.
    pub fn user_view(&self, user: &User) -> Value {
        let mut out = Map::new();
        for (k, v) in &user.record {
            if matches!(
                k.as_str(),
                "password" | "hash" | "refresh_token" | "hash_function"
            ) {
                continue;
            }
            if k == "role" {
                let role = self
                    .roles
                    .get(&user.role_id)
                    .map(Self::role_view)
                    .unwrap_or(Value::Null);
                out.insert(k.clone(), role);
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
        Value::Object(out)
    }
}

pub fn user_from_record(r: &Map<String, Value>) -> Option<User> {
    Some(User {
        username: r.get("username")?.as_str()?.to_string(),
        password_hash: r
            .get("password")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        role_id: match r.get("role")? {
            Value::String(s) => s.clone(),
            Value::Object(o) => o.get("id")?.as_str()?.to_string(),
            _ => return None,
        },
        active: r.get("active").and_then(Value::as_bool).unwrap_or(true),
        record: r.clone(),
    })
}

pub fn role_from_record(r: &Map<String, Value>) -> Option<Role> {
    let id = match r.get("id")? {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some(Role {
        name: r
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or(&id)
            .to_string(),
        id,
        permission: r.get("permission").cloned().unwrap_or(Value::Null),
        record: r.clone(),
    })
}

/// JavaScript's truthiness of a JSON value (Harper's checks use it).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A JSON value as JavaScript would put it in a template string (names in messages).
fn js_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const TABLE_PERM_KEYS: [&str; 4] = ["read", "insert", "update", "delete"];
const ATTR_PERM_KEYS: [&str; 3] = ["read", "insert", "update"];

/// Harper's checks of the `permission` object of `add_role` / `alter_role`, against the
/// catalog, with its messages and grouping: errors about the role as a whole (super_user and
/// cluster_user flags, `structure_user`, databases and tables that do not exist) go to
/// `main_permissions`; errors inside one table's permissions (its CRUD flags, its
/// `attribute_permissions`) go to `schema_permissions["<database>_<table>"]`. Every error is
/// collected, in Harper's order, and answered together as a 400.
pub fn permission_errors(permission: &Map<String, Value>, catalog: &Catalog) -> Option<OpError> {
    let mut main: Vec<Value> = Vec::new();
    let mut tables: Map<String, Value> = Map::new();
    let mut table_error = |db: &str, t: &str, msg: String| {
        if let Value::Array(list) = tables
            .entry(format!("{db}_{t}"))
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            list.push(Value::String(msg));
        }
    };
    let is_true = |k: &str| permission.get(k) == Some(&Value::Bool(true));
    let (su, cu) = (is_true("super_user"), is_true("cluster_user"));
    if permission.len() > 1 && (su || cu) {
        main.push(json!(if su && cu {
            "Roles cannot have both 'super_user' and 'cluster_user' values included in their permissions set.".to_string()
        } else {
            let kind = if permission.get("super_user").is_some_and(truthy) {
                "super_user"
            } else {
                "cluster_user"
            };
            format!("Roles with '{kind}' set to true cannot have other permissions set.")
        }));
    }
    for kind in ["super_user", "cluster_user"] {
        if permission
            .get(kind)
            .is_some_and(|v| truthy(v) && !v.is_boolean())
        {
            main.push(json!(format!(
                "Value for '{kind}' permission must be a boolean"
            )));
        }
    }
    for (item, value) in permission {
        if item == "super_user" || item == "cluster_user" {
            continue;
        }
        if item == "structure_user" {
            match value {
                Value::Bool(_) => {}
                Value::Array(dbs) => {
                    for db in dbs {
                        let name = js_text(db);
                        if catalog.database(&name).is_none() {
                            main.push(json!(format!("database '{name}' does not exist")));
                        }
                    }
                }
                _ => main.push(json!(
                    "Value for 'structure_user' permission must be a boolean or Array"
                )),
            }
            continue;
        }
        if item.is_empty() || catalog.database(item).is_none() {
            main.push(json!(format!("database '{item}' does not exist")));
            continue;
        }
        let Some(Value::Object(table_perms)) = value.get("tables") else {
            continue;
        };
        for (t, perms) in table_perms {
            let Some(def) = catalog.table(item, t) else {
                main.push(json!(format!("Table '{item}.{t}' does not exist")));
                continue;
            };
            let empty = Map::new();
            let perms = perms.as_object().unwrap_or(&empty);
            for key in perms.keys() {
                if key != "attribute_permissions" && !TABLE_PERM_KEYS.contains(&key.as_str()) {
                    table_error(
                        item,
                        t,
                        format!("Invalid table permission key value '{key}'"),
                    );
                }
            }
            for key in TABLE_PERM_KEYS {
                match perms.get(key) {
                    None | Some(Value::Null) => table_error(
                        item,
                        t,
                        format!("Missing table {} permission", key.to_uppercase()),
                    ),
                    Some(Value::Bool(_)) => {}
                    Some(_) => table_error(
                        item,
                        t,
                        format!("Table {} permission must be a boolean", key.to_uppercase()),
                    ),
                }
            }
            let attrs = match perms.get("attribute_permissions") {
                None => {
                    table_error(item, t, "Missing 'attribute_permissions' array".into());
                    continue;
                }
                Some(Value::Null) => continue,
                Some(Value::Array(a)) => a,
                Some(_) => {
                    table_error(
                        item,
                        t,
                        "Value for 'attribute_permissions' must be an array".into(),
                    );
                    continue;
                }
            };
            let mut granted = [false; 3];
            for entry in attrs {
                let entry = entry.as_object().unwrap_or(&empty);
                for key in entry.keys() {
                    if key != "attribute_name"
                        && key != "delete"
                        && !ATTR_PERM_KEYS.contains(&key.as_str())
                    {
                        table_error(
                            item,
                            t,
                            format!("Invalid attribute permission key value '{key}'"),
                        );
                    }
                }
                let name = match entry.get("attribute_name") {
                    None | Some(Value::Null) => {
                        table_error(
                            item,
                            t,
                            "Permission object in 'attribute_permission' missing an 'attribute_name'"
                                .into(),
                        );
                        continue;
                    }
                    Some(Value::String(n)) if def.has_attribute(n) => n,
                    Some(other) => {
                        table_error(
                            item,
                            t,
                            format!(
                                "Invalid attribute '{}' in 'attribute_permissions'",
                                js_text(other)
                            ),
                        );
                        continue;
                    }
                };
                for (i, key) in ATTR_PERM_KEYS.iter().enumerate() {
                    match entry.get(*key) {
                        None | Some(Value::Null) => table_error(
                            item,
                            t,
                            format!(
                                "{} attribute permission missing for '{name}'",
                                key.to_uppercase()
                            ),
                        ),
                        Some(Value::Bool(b)) => granted[i] |= *b,
                        Some(_) => table_error(
                            item,
                            t,
                            format!(
                                "{} attribute permission for '{name}' must be a boolean",
                                key.to_uppercase()
                            ),
                        ),
                    }
                }
            }
            // An attribute cannot be granted what its table refuses.
            let table_false = |k: &str| perms.get(k) == Some(&Value::Bool(false));
            if ATTR_PERM_KEYS
                .iter()
                .zip(granted)
                .any(|(k, g)| g && table_false(k))
            {
                table_error(
                    item,
                    t,
                    format!(
                        "You have a conflict with TABLE permissions for '{item}.{t}' being false and ATTRIBUTE permissions being true"
                    ),
                );
            }
        }
    }
    if main.is_empty() && tables.is_empty() {
        return None;
    }
    Some(OpError {
        status: 400,
        body: json!({
            "error": "Errors in the role permissions JSON provided",
            "main_permissions": main,
            "schema_permissions": tables,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role(perm: Value) -> Role {
        role_from_record(
            json!({"id":"r","role":"r","permission":perm})
                .as_object()
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn table_permissions_are_per_database_table_and_action() {
        let r = role(
            json!({"super_user": false, "dev": {"tables": {"dog": {"read": true, "insert": false}}}}),
        );
        assert!(r.allows("dev", "dog", TablePerm::Read));
        assert!(!r.allows("dev", "dog", TablePerm::Insert));
        assert!(!r.allows("dev", "cat", TablePerm::Read));
        assert!(!r.allows("prod", "dog", TablePerm::Read));
        assert!(!r.is_super_user());
        assert!(r.can_see("dev", "dog"));
        assert!(!r.can_see("dev", "cat"));
    }

    #[test]
    fn super_user_may_do_everything() {
        let r = role(json!({"super_user": true}));
        assert!(r.allows("x", "y", TablePerm::Delete));
        assert!(r.may_change_structure("x"));
    }

    #[test]
    fn structure_users_never_reach_the_system_database() {
        for grant in [
            json!({"structure_user": true}),
            json!({"structure_user": ["system", "dev"]}),
            json!({"structure_user": true, "system": {"tables": {"hdb_user": {"read": true}}}}),
        ] {
            let r = role(grant.clone());
            assert!(!r.may_change_structure("system"), "{grant}");
            assert!(!r.allows("system", "hdb_user", TablePerm::Read), "{grant}");
            assert!(!r.can_see("system", "hdb_user"), "{grant}");
        }
        assert!(role(json!({"structure_user": true})).allows("dev", "t", TablePerm::Read));
    }

    /// Harper's rules, as captured from 4.7.29: listed attributes get their flags, unlisted ones
    /// nothing, an unlisted key what any listed attribute has; `*` is the readable listed
    /// attributes, key last.
    #[test]
    fn attribute_permissions_rule_table() {
        let perm = |attrs: Value| {
            role(
                json!({"dev": {"tables": {"emp": {"read": true, "insert": true, "update": true,
                "delete": true, "attribute_permissions": attrs}}}}),
            )
        };
        let none = perm(json!([]));
        assert!(none.attribute_rules("dev", "emp").is_none());
        let ssn_only = perm(
            json!([{"attribute_name":"owner_ssn","read":false,"insert":false,"update":false}]),
        )
        .attribute_rules("dev", "emp")
        .unwrap();
        assert!(!ssn_only.allows("id", "id", TablePerm::Read));
        assert!(!ssn_only.allows("name", "id", TablePerm::Read));
        assert!(ssn_only.readable("id").is_empty());
        let two = perm(json!([
            {"attribute_name":"name","read":true,"insert":true,"update":true},
            {"attribute_name":"salary","read":true,"insert":false,"update":true},
            {"attribute_name":"owner_ssn","read":false,"insert":false,"update":false}]))
        .attribute_rules("dev", "emp")
        .unwrap();
        let cases = [
            ("name", TablePerm::Read, true),
            ("owner_ssn", TablePerm::Read, false),
            ("__createdtime__", TablePerm::Read, false),
            ("newattr", TablePerm::Insert, false),
            ("salary", TablePerm::Insert, false),
            ("salary", TablePerm::Update, true),
            ("id", TablePerm::Read, true),
            ("id", TablePerm::Insert, true),
        ];
        for (attr, p, want) in cases {
            assert_eq!(two.allows(attr, "id", p), want, "{attr} {p:?}");
        }
        assert_eq!(two.readable("id"), ["name", "salary", "id"]);
        assert!(role(json!({"super_user": true}))
            .attribute_rules("dev", "emp")
            .is_none());
    }

    /// Harper's `describe` flag: an attribute shows if the role may read, insert or update it
    /// (a timestamp only if it may read it); the unlisted key shows if anything listed does.
    #[test]
    fn describe_shows_attributes_a_role_may_use_in_any_way() {
        let rules = |attrs: Value| {
            role(
                json!({"dev": {"tables": {"emp": {"read": true, "insert": true,
                "update": true, "delete": true, "attribute_permissions": attrs}}}}),
            )
            .attribute_rules("dev", "emp")
            .unwrap()
        };
        let r = rules(json!([
            {"attribute_name":"name","read":false,"insert":true,"update":false},
            {"attribute_name":"ssn","read":false,"insert":false,"update":false},
            {"attribute_name":"__createdtime__","read":false,"insert":true,"update":true},
            {"attribute_name":"__updatedtime__","read":true,"insert":false,"update":false}]));
        for (attr, shown) in [
            ("name", true),
            ("ssn", false),
            ("__createdtime__", false),
            ("__updatedtime__", true),
            ("id", true),
            ("unlisted", false),
        ] {
            assert_eq!(r.describes(attr, "id"), shown, "{attr}");
        }
        let hidden =
            rules(json!([{"attribute_name":"ssn","read":false,"insert":false,"update":false}]));
        assert!(!hidden.describes("id", "id"));
    }

    #[test]
    fn permission_errors_need_a_catalog_that_has_the_names() {
        let mut c = Catalog::with_system();
        c.create_table("dev", "dog", "id", &[], false);
        let ok = json!({"super_user": false, "structure_user": ["dev"],
            "dev": {"tables": {"dog": {"read": true, "insert": false, "update": false,
            "delete": false, "attribute_permissions": null}}}});
        assert!(permission_errors(ok.as_object().unwrap(), &c).is_none());
        let su = json!({"super_user": true});
        assert!(permission_errors(su.as_object().unwrap(), &c).is_none());
        let bad = json!({"super_user": true, "cluster_user": true});
        let e = permission_errors(bad.as_object().unwrap(), &c).unwrap();
        assert_eq!(
            e.body["main_permissions"],
            json!(["Roles cannot have both 'super_user' and 'cluster_user' values included in their permissions set."])
        );
    }

    #[test]
    fn structure_user_by_list() {
        let r = role(json!({"structure_user": ["dev"]}));
        assert!(r.may_change_structure("dev"));
        assert!(!r.may_change_structure("prod"));
    }

    #[test]
    fn user_view_hides_secrets_and_expands_role() {
        let mut s = AuthState::default();
        s.apply_role(
            "r",
            json!({"id":"r","role":"reader","permission":{}}).as_object(),
        );
        s.apply_user(
            "u",
            json!({"username":"u","password":"h","hash_function":"argon2id","role":"r","active":true})
                .as_object(),
        );
        let v = s.user_view(&s.users["u"]);
        assert!(v.get("password").is_none());
        assert!(v.get("hash_function").is_none());
        assert_eq!(v["role"]["role"], "reader");
        assert_eq!(s.principal("u").unwrap().role.unwrap().name, "reader");
        s.apply_user("u", None);
        assert!(s.principal("u").is_none());
    }
}
