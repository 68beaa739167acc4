//! Writing a D-Bus interface from a table, for the interfaces whose
//! methods open alike (`org.phonecsp.CryptoProvider1`, `Key1`).
//!
//! zbus's `#[interface]` reads its block as written and cannot see into a
//! macro invoked inside it, so [`interface_table!`] writes the whole block:
//! what a group of methods declares and how they open are said once, and
//! an entry says only what is particular to it.

/// Writes `#[interface(..)] impl TYPE { .. }` from
///
/// ```text
/// #[interface(..)] impl TYPE;
/// methods (SELF, HDR, CONN, IMPLICIT: TYPE, ..) { OPENING } {
///     [ATTRIBUTES] fn NAME(ARG: TYPE [as WRAPPER], ..) [-> REPLY] BODY
///     ..
/// }
/// ..
/// [snapshot NOW { [ATTRIBUTES] NAME: TYPE = FIELD; .. }]
/// others { ITEMS }
/// ```
///
/// Each method is `async`, takes the caller's message header (HDR) and
/// connection (CONN), then the IMPLICIT arguments of its group, then its
/// own; it puts each argument with a WRAPPER in it (`Zeroizing` for a
/// secret, wiped whatever happens next), runs its group's OPENING and
/// then BODY, and replies `Result<REPLY, phonecsp::Error>` (REPLY `()` if
/// left out). Each snapshot property is `self.NOW().FIELD`. The OTHERS
/// come last as they are (the last method of CryptoProvider1 must stay
/// `Pair`).
macro_rules! interface_table {
    (
        #[interface($($iface:tt)*)] impl $type:ident;
        $(methods $each:tt $opening:tt { $($methods:tt)* })+
        snapshot $now:ident { $($props:tt)* }
        others { $($others:tt)* }
    ) => {
        $crate::interface::interface_table!(@method [$($iface)*] $type () {}
            [$now $($props)*] [] [$($others)*] [$([$each $opening $($methods)*])+]);
    };
    (
        #[interface($($iface:tt)*)] impl $type:ident;
        $(methods $each:tt $opening:tt { $($methods:tt)* })+
        others { $($others:tt)* }
    ) => {
        $crate::interface::interface_table!(@method [$($iface)*] $type () {}
            [none] [] [$($others)*] [$([$each $opening $($methods)*])+]);
    };
    // A method: the reply is passed on as tokens, since zbus sees a reply
    // of `()` only as those two tokens, not as a type a macro passes on.
    (@method $iface:tt $type:ident $each:tt $opening:tt $snapshot:tt $done:tt $others:tt
        $groups:tt
        $(#[$($attr:tt)*])*
        fn $name:ident $args:tt $(-> $reply:ty)? $body:block
        $($rest:tt)*
    ) => {
        $crate::interface::interface_table!(@write $iface $type $each $opening $snapshot $done
            $others $groups [$(#[$($attr)*])*] $name $args [$($reply)?] $body $($rest)*);
    };
    (@write $iface:tt $type:ident $each:tt $opening:tt $snapshot:tt $done:tt $others:tt
        $groups:tt $attrs:tt $name:ident $args:tt [] $($rest:tt)*
    ) => {
        $crate::interface::interface_table!(@write $iface $type $each $opening $snapshot $done
            $others $groups $attrs $name $args [()] $($rest)*);
    };
    (@write $iface:tt $type:ident
        ($self:ident, $hdr:ident, $conn:ident $(, $implicit:ident: $itype:ty)*)
        { $($opening:tt)* } $snapshot:tt [$($done:tt)*] $others:tt $groups:tt [$($attrs:tt)*]
        $name:ident ($($arg:ident: $ty:ty $(as $wrap:ident)?),*) [$($reply:tt)*] $body:block
        $($rest:tt)*
    ) => {
        $crate::interface::interface_table!(@method $iface $type
            ($self, $hdr, $conn $(, $implicit: $itype)*) { $($opening)* } $snapshot
            [$($done)*
                $($attrs)*
                #[allow(clippy::too_many_arguments)]
                async fn $name(
                    &$self,
                    #[zbus(header)] $hdr: zbus::message::Header<'_>,
                    #[zbus(connection)] $conn: &zbus::Connection,
                    $($implicit: $itype,)*
                    $($arg: $ty),*
                ) -> std::result::Result<$($reply)*, phonecsp::Error> {
                    $($(let $arg = $wrap::new($arg);)?)*
                    $($opening)*
                    $body
                }
            ]
            $others $groups $($rest)*);
    };
    // A group is written: the next one.
    (@method $iface:tt $type:ident $each:tt $opening:tt $snapshot:tt $done:tt $others:tt
        [[$next_each:tt $next_opening:tt $($next:tt)*] $($groups:tt)*]
    ) => {
        $crate::interface::interface_table!(@method $iface $type $next_each $next_opening
            $snapshot $done $others [$($groups)*] $($next)*);
    };
    // Every method is written: the snapshot's properties, then the rest.
    (@method [$($iface:tt)*] $type:ident $each:tt $opening:tt
        [$now:ident $($(#[$($attr:tt)*])* $prop:ident: $ptype:ty = $field:ident;)*]
        [$($done:tt)*] [$($others:tt)*] []
    ) => {
        #[zbus::interface($($iface)*)]
        impl $type {
            $($done)*
            $(
                $(#[$($attr)*])*
                fn $prop(&self) -> $ptype {
                    self.$now().$field
                }
            )*
            $($others)*
        }
    };
}

pub(crate) use interface_table;
