//! Writing a D-Bus interface from a table, for the interfaces whose
//! methods all open the same way and whose properties read one snapshot
//! (`org.phonecsp.CryptoProvider1`, `Token1`, `Key1`).
//!
//! zbus's `#[interface]` reads its block as written and cannot see into a
//! macro invoked inside it, so [`interface_table!`] writes the whole block:
//! what every method declares and how it opens are said once per
//! interface, and an entry says only what is particular to it.

/// Writes `#[interface(..)] impl TYPE { .. }` from
///
/// ```text
/// #[interface(..)] impl TYPE;
/// each (SELF, HDR, CONN, IMPLICIT: TYPE, ..) { OPENING }
/// methods { [ATTRIBUTES] fn NAME(ARG: TYPE [as WRAPPER], ..) [-> REPLY] BODY .. }
/// [snapshot NOW { [ATTRIBUTES] NAME: TYPE = FIELD; .. }]
/// others { ITEMS }
/// ```
///
/// Each method is `async`, takes the caller's message header (HDR) and
/// connection (CONN), then the IMPLICIT arguments every method of the
/// interface has, then its own; it puts each argument with a WRAPPER in
/// it (`Zeroizing` for a secret, wiped whatever happens next), runs
/// OPENING and then BODY, and replies `Result<REPLY, phonecsp::Error>`
/// (REPLY `()` if left out).
/// Each snapshot property is `SELF.NOW().FIELD`. The OTHERS come last as
/// they are (the last method of CryptoProvider1 must stay `Pair`).
macro_rules! interface_table {
    (
        #[interface($($iface:tt)*)] impl $type:ident;
        each $each:tt $opening:tt
        methods { $($methods:tt)* }
        snapshot $now:ident { $($props:tt)* }
        others { $($others:tt)* }
    ) => {
        $crate::interface::interface_table!(@method
            [$($iface)*] $type $each $opening $now [] [$($props)*] [$($others)*] $($methods)*);
    };
    // An interface without snapshot properties.
    (
        #[interface($($iface:tt)*)] impl $type:ident;
        each $each:tt $opening:tt
        methods { $($methods:tt)* }
        others { $($others:tt)* }
    ) => {
        $crate::interface::interface_table! {
            #[interface($($iface)*)] impl $type;
            each $each $opening
            methods { $($methods)* }
            snapshot none {}
            others { $($others)* }
        }
    };
    // A method: the reply is passed on as tokens, since zbus sees a reply
    // of `()` only as those two tokens, not as a type a macro passes on.
    (@method $iface:tt $type:ident $each:tt $opening:tt $now:ident [$($done:tt)*] $props:tt
        $others:tt
        $(#[$($attr:tt)*])*
        fn $name:ident $args:tt $(-> $reply:ty)? $body:block
        $($rest:tt)*
    ) => {
        $crate::interface::interface_table!(@write $iface $type $each $opening $now [$($done)*]
            $props $others [$(#[$($attr)*])*] $name $args [$($reply)?] $body $($rest)*);
    };
    (@write $iface:tt $type:ident $each:tt $opening:tt $now:ident $done:tt $props:tt
        $others:tt $attrs:tt $name:ident $args:tt [] $($rest:tt)*
    ) => {
        $crate::interface::interface_table!(@write $iface $type $each $opening $now $done $props
            $others $attrs $name $args [()] $($rest)*);
    };
    (@write $iface:tt $type:ident
        ($self:ident, $hdr:ident, $conn:ident $(, $implicit:ident: $itype:ty)*)
        { $($opening:tt)* } $now:ident [$($done:tt)*] $props:tt $others:tt [$($attrs:tt)*]
        $name:ident ($($arg:ident: $ty:ty $(as $wrap:ident)?),*) [$($reply:tt)*] $body:block
        $($rest:tt)*
    ) => {
        $crate::interface::interface_table!(@method $iface $type
            ($self, $hdr, $conn $(, $implicit: $itype)*) { $($opening)* } $now
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
            $props $others $($rest)*);
    };
    // The methods are written: the snapshot's properties, then the rest.
    (@method [$($iface:tt)*] $type:ident ($self:ident, $($each:tt)*) $opening:tt $now:ident
        [$($done:tt)*] [$($(#[$($attr:tt)*])* $prop:ident: $ptype:ty = $field:ident;)*]
        [$($others:tt)*]
    ) => {
        #[zbus::interface($($iface)*)]
        impl $type {
            $($done)*
            $(
                $(#[$($attr)*])*
                fn $prop(&$self) -> $ptype {
                    $self.$now().$field
                }
            )*
            $($others)*
        }
    };
}

pub(crate) use interface_table;
