//! The library's modules depend on each other without cycles: each stage can be read, tested
//! and changed knowing only what it uses. Dependencies are the `crate::<module>` paths of
//! each top-level module's files (in `use` trees, code and macro arguments), items compiled
//! only for tests excluded. Files are parsed, not searched, so an import group or code after
//! a test-only item is read like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// The top-level modules named by code outside `#[cfg(test)]` items.
#[derive(Default)]
struct Named(BTreeSet<String>);

/// Whether `attrs` hold `#[cfg(test)]`.
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && matches!(&attr.meta, syn::Meta::List(list) if list.tokens.to_string() == "test")
    })
}

impl Named {
    /// The first names of a `use crate::…` tree: `a` and `b` of `{a, b::c}`.
    fn heads(&mut self, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => self.add(&path.ident),
            syn::UseTree::Name(name) => self.add(&name.ident),
            syn::UseTree::Rename(rename) => self.add(&rename.ident),
            syn::UseTree::Group(group) => group.items.iter().for_each(|t| self.heads(t)),
            syn::UseTree::Glob(_) => {}
        }
    }

    fn add(&mut self, name: &proc_macro2::Ident) {
        self.0.insert(name.to_string());
    }

    /// `crate :: name` in a macro's arguments, which syn leaves as tokens.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        for (at, token) in tokens.iter().enumerate() {
            match (
                token,
                tokens.get(at + 1),
                tokens.get(at + 2),
                tokens.get(at + 3),
            ) {
                (
                    TokenTree::Ident(krate),
                    Some(TokenTree::Punct(a)),
                    Some(TokenTree::Punct(b)),
                    Some(TokenTree::Ident(name)),
                ) if krate == "crate" && a.as_char() == ':' && b.as_char() == ':' => self.add(name),
                (TokenTree::Group(group), ..) => self.tokens(group.stream()),
                _ => {}
            }
        }
    }
}

impl<'ast> Visit<'ast> for Named {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            _ => &[],
        };
        if !test_only(attrs) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs: &[syn::Attribute] = match item {
            syn::ImplItem::Const(i) => &i.attrs,
            syn::ImplItem::Fn(i) => &i.attrs,
            syn::ImplItem::Type(i) => &i.attrs,
            syn::ImplItem::Macro(i) => &i.attrs,
            _ => &[],
        };
        if !test_only(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if let syn::UseTree::Path(path) = &item.tree
            && path.ident == "crate"
        {
            self.heads(&path.tree);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let (Some(first), Some(second)) = (segments.next(), segments.next())
            && first.ident == "crate"
        {
            self.add(&second.ident);
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }
}

/// The top-level modules a file's code names.
fn named(source: &str) -> BTreeSet<String> {
    let file = syn::parse_file(source).expect("the crate's files parse");
    let mut named = Named::default();
    named.visit_file(&file);
    named.0
}

/// Top-level module → the top-level modules it names.
fn dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let used = graph.entry(top.clone()).or_default();
        used.extend(named(&text).into_iter().filter(|name| *name != top));
    }
    graph
}

/// A cycle through `from`, if there is one: the modules on it, in order.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        target: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == target {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(graph, next, target, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    visit(graph, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn the_modules_depend_on_each_other_without_cycles() {
    let graph = dependencies(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 15, "every module was read: {graph:?}");
    assert!(
        graph["route"].contains("sink"),
        "dependencies are found: {graph:?}"
    );
    let cycles: Vec<Vec<String>> = graph
        .keys()
        .filter_map(|module| cycle_through(&graph, module))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:?}");
}

#[test]
fn import_groups_macros_and_code_after_test_items_are_read() {
    let source = r#"
        use crate::{a, b::c, d as e};
        use std::fmt;
        #[cfg(test)]
        mod tests {
            use crate::only_tests;
        }
        #[cfg(test)]
        fn helper() -> crate::only_tests::T { todo!() }
        impl S {
            #[cfg(test)]
            fn made(&self) { crate::only_tests::f(); }
            fn used(&self) { crate::f::g(); }
        }
        struct S(crate::h::T);
        fn log() { tracing::info!("{}", crate::i::NAME); }
    "#;
    let names: Vec<String> = named(source).into_iter().collect();
    assert_eq!(names, ["a", "b", "d", "f", "h", "i"]);
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a", "d"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(m, uses)| (m.to_string(), uses.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        cycle_through(&graph, "a"),
        Some(vec!["a".to_string(), "b".to_string(), "c".to_string()])
    );
    assert_eq!(cycle_through(&graph, "d"), None);
}
