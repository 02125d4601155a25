//! Derive macros for [crashonly](https://docs.rs/crashonly) actors.
//!
//! - `#[derive(Actor)]` on a struct, with `#[actor(args = T, mailbox = 64, restart = "transient",
//!   ttl = "2s", store_key = "cart")]`, all optional.
//! - `#[messages]` on an `impl` block: every `#[message]` method becomes a variant of the actor's
//!   message type and a typed method on `ActorRef<Self>` and `EntityRef<Self>` (through a trait
//!   named `<Type>Api`); `#[message(idempotent)]` and `#[message(ttl = "700ms")]` set the envelope
//!   defaults; one optional `#[start]` function is the recovery path. A method with a
//!   `ReplyPort<T>` argument (and no return value) defers its reply; `#[messages(no_clone)]` for
//!   messages that cannot be copied (then none may be idempotent); `#[messages(remote = "id")]`
//!   for messages that cross processes (serde's derives, a stable id), whose typed methods then
//!   work on crashonly-cluster's `RemoteRef<Self>` too.
//!
//! Everything generated names the runtime only through its hidden `__private` module, by an
//! absolute path (`::crashonly::__private::...`), so it works whatever the user has imported. A
//! crate that depends on crashonly under another name says so with `#[actor(crate = path)]` and
//! `#[messages(crate = path)]` (a path or a string, as serde's `crate` attribute).

mod parse;

use parse::{message_attr, message_fn, start_fn, CallArg};
use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{parse_macro_input, DeriveInput, Error, Expr, ExprLit, ImplItem, ItemImpl, Lit, LitStr, Meta, Token, Type};

/// Parses "700ms", "2s", "1m", "250us" into tokens building a `Duration`.
fn duration(lit: &LitStr) -> syn::Result<TokenStream2> {
    let v = lit.value();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let bad = || {
        Error::new(
            lit.span(),
            format!("invalid duration {v:?}: expected a whole number and a unit: us, ms, s or m (like \"700ms\")"),
        )
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(Error::new(lit.span(), "a duration must be greater than zero"));
    }
    Ok(match unit {
        "us" => quote!(::core::time::Duration::from_micros(#n)),
        "ms" => quote!(::core::time::Duration::from_millis(#n)),
        "s" => quote!(::core::time::Duration::from_secs(#n)),
        "m" => quote!(::core::time::Duration::from_secs(#n * 60)),
        _ => return Err(bad()),
    })
}

fn lit_str(expr: &Expr, what: &str) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(s.clone()),
        other => Err(Error::new(
            other.span(),
            format!("`{what}` takes a string, like {what} = \"...\""),
        )),
    }
}

/// The `__private` module of the runtime: `::crashonly::__private` unless `crate = path` says where
/// the runtime is.
fn private_path(krate: Option<syn::Path>) -> TokenStream2 {
    match krate {
        Some(p) => quote!(#p::__private),
        None => quote!(::crashonly::__private),
    }
}

/// The value of `crate = ..`: a path (`crate = my_runtime`) or a string (`crate = "my_runtime"`).
fn crate_path(value: &Expr) -> syn::Result<syn::Path> {
    match value {
        Expr::Path(p) => Ok(p.path.clone()),
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => s.parse(),
        other => Err(Error::new(
            other.span(),
            "`crate` takes the path the runtime is known by, like crate = my_runtime",
        )),
    }
}

fn is_crate_key(path: &syn::Path) -> bool {
    path.get_ident().is_some_and(|i| i == "crate") || path.is_ident("krate")
}

/// `#[derive(Actor)]`: records the `#[actor(..)]` settings for `#[messages]` and adds
/// `fn spec(args) -> ActorSpec<Self>` with them applied.
#[proc_macro_derive(Actor, attributes(actor))]
pub fn derive_actor(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    derive_actor_impl(input)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

fn derive_actor_impl(input: DeriveInput) -> syn::Result<TokenStream2> {
    if !input.generics.params.is_empty() {
        return Err(Error::new(
            input.generics.span(),
            "#[derive(Actor)] does not support generic actors",
        ));
    }
    let name = &input.ident;
    let mut args: Type = syn::parse_quote!(Self);
    let mut consts = Vec::new();
    let mut metas = Vec::new();
    let mut krate = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("actor")) {
        for meta in attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)? {
            match &meta {
                Meta::NameValue(nv) if is_crate_key(&nv.path) => krate = Some(crate_path(&nv.value)?),
                _ => metas.push(meta),
            }
        }
    }
    let p = private_path(krate);
    let mut entity_key: Option<Type> = None;
    let mut restart_span: Option<Span> = None;
    {
        for meta in metas {
            if let Meta::Path(path) = &meta {
                if path.is_ident("entity") {
                    entity_key = Some(syn::parse_quote!(::std::string::String));
                    continue;
                }
            }
            let Meta::NameValue(nv) = &meta else {
                return Err(Error::new(
                    meta.span(),
                    "expected `entity` or `key = value`: args, entity, mailbox, restart, ttl, store_key or crate",
                ));
            };
            let key = nv.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
            match key.as_str() {
                "args" => {
                    args = match &nv.value {
                        Expr::Path(p) => Type::Path(syn::TypePath {
                            qself: None,
                            path: p.path.clone(),
                        }),
                        other => {
                            syn::parse2(quote!(#other)).map_err(|_| Error::new(other.span(), "`args` takes a type"))?
                        }
                    }
                }
                "entity" => {
                    let value = &nv.value;
                    entity_key = Some(
                        syn::parse2(quote!(#value))
                            .map_err(|_| Error::new(value.span(), "`entity` takes the key type, like entity = u64"))?,
                    );
                }
                "mailbox" => match &nv.value {
                    Expr::Lit(ExprLit { lit: Lit::Int(n), .. }) if n.base10_parse::<usize>().is_ok_and(|n| n > 0) => {
                        consts.push(
                            quote!(const MAILBOX: ::core::option::Option<usize> = ::core::option::Option::Some(#n);),
                        )
                    }
                    other => return Err(Error::new(other.span(), "`mailbox` takes a positive whole number")),
                },
                "restart" => {
                    restart_span = Some(nv.path.span());
                    let s = lit_str(&nv.value, "restart")?;
                    let variant = match s.value().as_str() {
                        "permanent" => quote!(Permanent),
                        "transient" => quote!(Transient),
                        "temporary" => quote!(Temporary),
                        _ => {
                            return Err(Error::new(
                                s.span(),
                                "`restart` is \"permanent\", \"transient\" or \"temporary\"",
                            ))
                        }
                    };
                    consts.push(quote!(const RESTART: #p::Restart = #p::Restart::#variant;));
                }
                "ttl" => {
                    let d = duration(&lit_str(&nv.value, "ttl")?)?;
                    consts.push(quote!(const TTL: ::core::option::Option<::core::time::Duration> = ::core::option::Option::Some(#d);));
                }
                "store_key" => {
                    let s = lit_str(&nv.value, "store_key")?;
                    consts.push(quote!(const STORE_KEY: ::core::option::Option<&'static str> = ::core::option::Option::Some(#s);));
                }
                _ => {
                    return Err(Error::new(
                        nv.path.span(),
                        "unknown actor setting: expected args, entity, mailbox, restart, ttl, store_key or crate",
                    ))
                }
            }
        }
    }
    let vis = &input.vis;
    let store_key = if consts.iter().any(|c| c.to_string().contains("STORE_KEY")) {
        quote!(<Self as #p::ActorDefaults>::STORE_KEY)
    } else {
        quote!(::core::option::Option::None)
    };
    if entity_key.is_some() {
        if let Some(span) = restart_span {
            return Err(Error::new(
                span,
                "`restart` does not apply to an entity: its family restarts a crashed entity by itself (set the family's own restart type with `EntitySpec::restart`)",
            ));
        }
    }
    let entity = entity_key.map(|key| {
        quote! {
            impl #p::Entity for #name {
                type Key = #key;
            }

            impl #name {
                /// A family of these entities named `name`, whose entity `key` starts with the
                /// arguments `make(key)`, with the settings of its `#[actor(..)]` attribute.
                #[allow(dead_code)]
                #vis fn entities(
                    name: impl ::core::convert::Into<::std::string::String>,
                    make: impl ::core::ops::Fn(&#key) -> <Self as #p::ActorDefaults>::Args + ::core::marker::Send + ::core::marker::Sync + 'static,
                ) -> #p::EntitySpec<Self> {
                    #p::entity_spec::<Self>(name, make)
                }
            }
        }
    });
    Ok(quote! {
        impl #p::ActorDefaults for #name {
            type Args = #args;
            #(#consts)*
        }

        #entity

        impl #name {
            /// The store key of `#[actor(store_key = "..")]`, if any.
            #[allow(dead_code)]
            #vis const STORE_KEY: ::core::option::Option<&'static str> = #store_key;

            /// A spec for this actor with the settings of its `#[actor(..)]` attribute.
            #[allow(dead_code)]
            #vis fn spec(args: <Self as #p::ActorDefaults>::Args) -> #p::ActorSpec<Self> {
                #p::spec::<Self>(args)
            }
        }
    })
}

/// `#[messages]`: implements `Actor` for the type from its `#[message]` methods and its optional
/// `#[start]` function, and adds a typed method per message on `ActorRef<Self>`.
///
/// `#[messages(clone_replies)]` also derives `Clone` for the reply type (every method's return type
/// must then be `Clone`), which `ActorSpec::dedup` needs.
#[proc_macro_attribute]
pub fn messages(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TokenStream2::from(attr);
    let (args, krate) = match messages_args(attr) {
        Ok(a) => a,
        Err(e) => return e.into_compile_error().into(),
    };
    let p = private_path(krate);
    let item = parse_macro_input!(item as ItemImpl);
    let self_ty = item.self_ty.clone();
    messages_impl(item, args, &p)
        .unwrap_or_else(|e| {
            // The error, plus a stand-in `Actor` impl so that it is the only error reported.
            let err = e.into_compile_error();
            quote! {
                #err
                impl #p::Actor for #self_ty {
                    type Args = <Self as #p::ActorDefaults>::Args;
                    type Msg = ();
                    type Reply = ();
                    type Error = ::core::convert::Infallible;
                    async fn start(_: &Self::Args, _: &mut #p::Context<Self>) -> ::core::result::Result<Self, Self::Error> {
                        ::core::unreachable!()
                    }
                    async fn handle(&mut self, _: (), _: &mut #p::Context<Self>) -> ::core::result::Result<(), Self::Error> {
                        ::core::unreachable!()
                    }
                }
            }
        })
        .into()
}

/// The settings of `#[messages(..)]`.
#[derive(Default)]
struct MessagesArgs {
    clone_replies: bool,
    no_clone: bool,
    /// `remote = "id"`: the messages can cross processes under this stable id.
    remote: Option<LitStr>,
    /// `remote_version = n`.
    remote_version: Option<syn::LitInt>,
}

/// `#[messages]`, with any of `clone_replies`, `no_clone`, `crate = path`.
fn messages_args(attr: TokenStream2) -> syn::Result<(MessagesArgs, Option<syn::Path>)> {
    let mut args = MessagesArgs::default();
    let mut krate = None;
    for meta in Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)? {
        match &meta {
            Meta::Path(p) if p.is_ident("clone_replies") => args.clone_replies = true,
            Meta::Path(p) if p.is_ident("no_clone") => args.no_clone = true,
            Meta::NameValue(nv) if is_crate_key(&nv.path) => krate = Some(crate_path(&nv.value)?),
            Meta::NameValue(nv) if nv.path.is_ident("remote") => args.remote = Some(lit_str(&nv.value, "remote")?),
            Meta::NameValue(nv) if nv.path.is_ident("remote_version") => match &nv.value {
                Expr::Lit(ExprLit { lit: Lit::Int(n), .. }) if n.base10_parse::<u16>().is_ok() => {
                    args.remote_version = Some(n.clone())
                }
                other => return Err(Error::new(other.span(), "`remote_version` takes a whole number (0 to 65535)")),
            },
            other => {
                return Err(Error::new(
                    other.span(),
                    "#[messages] takes no arguments, or `clone_replies`, `no_clone`, `remote = \"id\"`, `remote_version = n`, `crate = path`",
                ))
            }
        }
    }
    Ok((args, krate))
}

fn messages_impl(mut item: ItemImpl, args: MessagesArgs, p: &TokenStream2) -> syn::Result<TokenStream2> {
    let MessagesArgs {
        clone_replies,
        no_clone,
        remote,
        remote_version,
    } = args;
    if remote.is_none() && remote_version.is_some() {
        return Err(Error::new(
            Span::call_site(),
            "`remote_version` needs `remote = \"id\"`",
        ));
    }
    if no_clone && remote.is_some() {
        return Err(Error::new(
            Span::call_site(),
            "remote messages are copied and serialized: `remote` and `no_clone` exclude each other",
        ));
    }
    if let Some((_, path, _)) = &item.trait_ {
        return Err(Error::new(
            path.span(),
            "#[messages] goes on an inherent impl block, not a trait impl",
        ));
    }
    if !item.generics.params.is_empty() {
        return Err(Error::new(
            item.generics.span(),
            "#[messages] does not support generic impl blocks",
        ));
    }
    let self_ty = (*item.self_ty).clone();
    let Type::Path(tp) = &self_ty else {
        return Err(Error::new(self_ty.span(), "#[messages] needs a named actor type"));
    };
    let type_name = tp.path.segments.last().expect("a path has a segment").ident.clone();
    let msg_enum = format_ident!("{}Message", type_name);
    let reply_enum = format_ident!("{}Reply", type_name);
    let api = format_ident!("{}Api", type_name);

    let mut msgs = Vec::new();
    let mut start: Option<(syn::Ident, Option<Type>, bool)> = None;
    for it in item.items.iter_mut() {
        let ImplItem::Fn(f) = it else { continue };
        if let Some(pos) = f.attrs.iter().position(|a| a.path().is_ident("start")) {
            f.attrs.remove(pos);
            start = Some(start_fn(f)?);
            continue;
        }
        let Some(pos) = f.attrs.iter().position(|a| a.path().is_ident("message")) else {
            continue;
        };
        let attr = message_attr(&f.attrs.remove(pos))?;
        msgs.push(message_fn(f, attr)?);
    }
    if msgs.is_empty() {
        return Err(Error::new(Span::call_site(), "#[messages] found no #[message] method"));
    }
    let vis = msgs[0].vis.clone();

    let variants = msgs.iter().map(|m| {
        let v = &m.variant;
        let tys = m.args.iter().map(|(_, t)| t);
        let docs = &m.docs;
        quote!(#(#docs)* #v(#(#tys),*))
    });
    let reply_variants = msgs.iter().map(|m| {
        let (v, o) = (&m.variant, &m.output);
        quote!(#v(#o))
    });
    let arms = msgs.iter().map(|m| {
        let (v, method) = (&m.variant, &m.method);
        let names: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
        let call_args: Vec<TokenStream2> = m
            .call
            .iter()
            .map(|a| match a {
                CallArg::Arg(n) => quote!(#n),
                CallArg::Ctx => quote!(__crashonly_ctx),
                CallArg::Port => quote!(__crashonly_port),
            })
            .collect();
        let call = if m.is_async {
            quote!(self.#method(#(#call_args),*).await)
        } else {
            quote!(self.#method(#(#call_args),*))
        };
        if m.deferred {
            // The port answers with this message's own reply variant; `handle`'s return value is
            // then ignored by the runtime.
            quote!(#msg_enum::#v(#(#names),*) => {
                let __crashonly_port = __crashonly_ctx.defer_map(#reply_enum::#v);
                #call;
                ::core::result::Result::Ok(#reply_enum::__Deferred)
            })
        } else {
            quote!(#msg_enum::#v(#(#names),*) => ::core::result::Result::Ok(#reply_enum::#v(#call)))
        }
    });
    let deferred_variant = msgs.iter().any(|m| m.deferred).then(|| {
        quote!(
            #[doc(hidden)]
            __Deferred,
        )
    });
    let (start_body, error_ty) = match &start {
        Some((f, Some(err), is_async)) => {
            let call = if *is_async {
                quote!(Self::#f(args, ctx).await)
            } else {
                quote!(Self::#f(args, ctx))
            };
            (call, quote!(#err))
        }
        Some((f, None, is_async)) => {
            let call = if *is_async {
                quote!(Self::#f(args, ctx).await)
            } else {
                quote!(Self::#f(args, ctx))
            };
            (
                quote!(::core::result::Result::Ok(#call)),
                quote!(::core::convert::Infallible),
            )
        }
        None => (
            quote_spanned!(self_ty.span()=> {
                let _ = ctx;
                // Without a #[start] function, an actor starts as a copy of its arguments
                // (`#[actor(args = ..)]` needs a #[start] function).
                ::core::result::Result::Ok(<Self as ::core::clone::Clone>::clone(args))
            }),
            quote!(::core::convert::Infallible),
        ),
    };
    let api_methods = msgs.iter().map(|m| {
        let (method, v, o, docs) = (&m.method, &m.variant, &m.output, &m.docs);
        let params = m.args.iter().map(|(n, t)| quote!(#n: #t));
        let names: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
        let idem_call = if m.attr.idempotent {
            quote!(let ask = #p::CallAsk::idempotent(ask);)
        } else {
            quote!()
        };
        let ttl = match &m.attr.ttl {
            Some(d) => quote!(::core::option::Option::Some(#d)),
            None => quote!(<#self_ty as #p::ActorDefaults>::TTL),
        };
        // The ask builder is the ref's own: `Ask` for local refs, another crate's for its refs
        // (crashonly-cluster's `RemoteAsk`).
        let sig = quote!(fn #method(&self, #(#params),*) -> #p::Call<'_, #self_ty, #o, <Self as #p::Requests<#self_ty>>::Ask<'_>>);
        (
            quote!(#(#docs)* #sig;),
            quote! {
                #sig {
                    let ask = #p::Requests::request(self, #msg_enum::#v(#(#names),*));
                    #idem_call
                    let ask = match #ttl { ::core::option::Option::Some(t) => #p::CallAsk::ttl(ask, t), ::core::option::Option::None => ask };
                    #p::call(ask, |r| match r {
                        #reply_enum::#v(v) => ::core::option::Option::Some(v),
                        #[allow(unreachable_patterns)]
                        _ => ::core::option::Option::None,
                    })
                }
            },
        )
    });
    let (decls, impls): (Vec<_>, Vec<_>) = api_methods.unzip();
    let doc_msg = format!("The messages of [`{type_name}`], one variant per `#[message]` method.");
    let doc_reply = format!("The replies of [`{type_name}`], one variant per `#[message]` method.");
    let doc_api = if remote.is_some() {
        format!(
            "Typed requests to a [`{type_name}`] actor or entity: `actor_ref.method(args).await` (also on an `EntityRef`, and on crashonly-cluster's `RemoteRef`)."
        )
    } else {
        format!(
            "Typed requests to a [`{type_name}`] actor or entity: `actor_ref.method(args).await` (also on an `EntityRef`)."
        )
    };

    let derive_clone = clone_replies.then(|| quote!(#[derive(Clone)]));
    // Remote messages and replies travel serialized: serde's derives (the user's crate depends
    // on serde), and the stable id and version.
    let serde_derive = remote
        .as_ref()
        .map(|_| quote!(#[derive(::serde::Serialize, ::serde::Deserialize)]));
    let remote_impl = remote.as_ref().map(|id| {
        let version = remote_version.as_ref().map(|v| quote!(const VERSION: u16 = #v;));
        quote! {
            impl #p::Remote for #msg_enum {
                const TYPE_ID: &'static str = #id;
                #version
            }
        }
    });
    if no_clone {
        if let Some(m) = msgs.iter().find(|m| m.attr.idempotent) {
            return Err(Error::new(
                m.method.span(),
                "an idempotent message is copied for redelivery after a crash: it cannot be in a `#[messages(no_clone)]` block",
            ));
        }
    }
    // Messages are `Clone` unless `no_clone` says they cannot be (reply ports, file handles):
    // only messages sent idempotent are ever copied.
    let derive_msg = if no_clone {
        quote!(#[derive(Debug)])
    } else {
        quote!(#[derive(Clone, Debug)])
    };
    Ok(quote! {
        #item

        #[doc = #doc_msg]
        #derive_msg
        #serde_derive
        #[allow(dead_code)]
        #vis enum #msg_enum {
            #(#variants),*
        }

        #[doc = #doc_reply]
        #[allow(dead_code)]
        #derive_clone
        #serde_derive
        #vis enum #reply_enum {
            #(#reply_variants,)*
            #deferred_variant
        }

        impl #p::Actor for #self_ty {
            type Args = <Self as #p::ActorDefaults>::Args;
            type Msg = #msg_enum;
            type Reply = #reply_enum;
            type Error = #error_ty;

            async fn start(args: &Self::Args, ctx: &mut #p::Context<Self>) -> ::core::result::Result<Self, Self::Error> {
                #start_body
            }

            #[allow(unused_variables)]
            async fn handle(
                &mut self,
                msg: #msg_enum,
                __crashonly_ctx: &mut #p::Context<Self>,
            ) -> ::core::result::Result<#reply_enum, Self::Error> {
                match msg {
                    #(#arms),*
                }
            }
        }

        #[doc = #doc_api]
        #vis trait #api: #p::Requests<#self_ty> {
            #(#decls)*
        }

        impl<__R: #p::Requests<#self_ty>> #api for __R {
            #(#impls)*
        }

        #remote_impl
    })
}
