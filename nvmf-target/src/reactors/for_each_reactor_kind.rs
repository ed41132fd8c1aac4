/// Runs each named test (a `fn(ReactorKind)`) once per reactor backend, in
/// modules `epoll` and `uring`; `$kind` is the path of `ReactorKind` where the
/// macro is used. One definition for the unit tests (`target::tests`) and the
/// protocol tests (`tests/protocol.rs`), which both `include!` this file.
macro_rules! for_each_reactor_kind {
    ($kind:path; $($name:ident),* $(,)?) => {
        mod epoll {
            use $kind as ReactorKind;
            $(#[test] fn $name() { super::$name(ReactorKind::Epoll) })*
        }
        mod uring {
            use $kind as ReactorKind;
            $(#[test] fn $name() { super::$name(ReactorKind::Uring) })*
        }
    };
}
