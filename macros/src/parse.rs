//! Parsing the methods of a `#[messages]` block: `#[message]` attributes and signatures (which
//! arguments travel, where the context and a reply port go, what the caller gets back) and the
//! `#[start]` function.

use proc_macro2::TokenStream as TokenStream2;
use quote::format_ident;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Error, FnArg, ImplItemFn, Meta, Pat, ReturnType, Token, Type, Visibility};

use crate::{duration, lit_str};

pub(crate) struct MessageAttr {
    pub(crate) idempotent: bool,
    pub(crate) ttl: Option<TokenStream2>,
}

pub(crate) fn message_attr(attr: &Attribute) -> syn::Result<MessageAttr> {
    let mut out = MessageAttr {
        idempotent: false,
        ttl: None,
    };
    if let Meta::List(list) = &attr.meta {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(list.tokens.clone())?;
        for meta in metas {
            match &meta {
                Meta::Path(p) if p.is_ident("idempotent") => out.idempotent = true,
                Meta::NameValue(nv) if nv.path.is_ident("ttl") => {
                    out.ttl = Some(duration(&lit_str(&nv.value, "ttl")?)?)
                }
                other => {
                    return Err(Error::new(
                        other.span(),
                        "unknown message setting: expected `idempotent` or `ttl = \"..\"`",
                    ))
                }
            }
        }
    }
    Ok(out)
}

fn is_context(ty: &Type) -> bool {
    match ty {
        Type::Reference(r) => is_context(&r.elem),
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Context"),
        _ => false,
    }
}

/// `T` of a `ReplyPort<T>` argument.
fn reply_port_of(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "ReplyPort" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(a) => match a.args.first()? {
            syn::GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn pascal(name: &str) -> String {
    name.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| p[..1].to_uppercase() + &p[1..])
        .collect()
}

pub(crate) enum CallArg {
    Arg(syn::Ident),
    Ctx,
    Port,
}

pub(crate) struct Msg {
    pub(crate) method: syn::Ident,
    pub(crate) variant: syn::Ident,
    pub(crate) args: Vec<(syn::Ident, Type)>,
    /// The method's arguments after `self`, in order.
    pub(crate) call: Vec<CallArg>,
    /// With a `ReplyPort<T>` argument the reply is deferred: `output` is `T`, what the caller gets.
    pub(crate) deferred: bool,
    pub(crate) output: Type,
    pub(crate) is_async: bool,
    pub(crate) attr: MessageAttr,
    pub(crate) docs: Vec<Attribute>,
    pub(crate) vis: Visibility,
}

/// A `#[start]` function: `fn(args: &Args, ctx: &mut Context<Self>) -> Self` or `-> Result<Self, E>`.
pub(crate) fn start_fn(f: &ImplItemFn) -> syn::Result<(syn::Ident, Option<Type>, bool)> {
    if let Some(FnArg::Receiver(r)) = f.sig.inputs.first() {
        return Err(Error::new(
            r.span(),
            "a #[start] function builds the actor: it takes no `self`",
        ));
    }
    if f.sig.inputs.len() != 2 {
        return Err(Error::new(
            f.sig.inputs.span(),
            "a #[start] function takes `(args: &Args, ctx: &mut Context<Self>)`",
        ));
    }
    let err = match &f.sig.output {
        ReturnType::Type(_, ty) => match &**ty {
            Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Result") => {
                let last = p.path.segments.last().expect("checked");
                match &last.arguments {
                    syn::PathArguments::AngleBracketed(a) if a.args.len() == 2 => match &a.args[1] {
                        syn::GenericArgument::Type(t) => Some(t.clone()),
                        _ => None,
                    },
                    _ => {
                        return Err(Error::new(
                            ty.span(),
                            "a #[start] function returns `Self` or `Result<Self, E>`",
                        ))
                    }
                }
            }
            _ => None,
        },
        ReturnType::Default => {
            return Err(Error::new(
                f.sig.span(),
                "a #[start] function returns `Self` or `Result<Self, E>`",
            ))
        }
    };
    Ok((f.sig.ident.clone(), err, f.sig.asyncness.is_some()))
}

/// Methods of `ActorRef` and `EntityRef` themselves: a generated method with one of these names
/// would be shadowed.
const RESERVED: &[&str] = &[
    "key",
    "activate",
    "activation",
    "passivate",
    "ask",
    "tell",
    "try_tell",
    "id",
    "path",
    "is_alive",
    "stats",
    "rejuvenate",
    "crash_reboot",
    "kill",
    "started",
    "link",
    "unlink",
    "clone",
    "eq",
    "ne",
    "fmt",
];

pub(crate) fn message_fn(f: &ImplItemFn, attr: MessageAttr) -> syn::Result<Msg> {
    let sig = &f.sig;
    if RESERVED.contains(&sig.ident.to_string().as_str()) {
        return Err(Error::new(
            sig.ident.span(),
            format!(
                "`{}` is a method of `ActorRef` or `EntityRef` itself: name this message differently",
                sig.ident
            ),
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(Error::new(
            sig.generics.span(),
            "a #[message] method cannot be generic: a message is one concrete type",
        ));
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() => {}
        Some(FnArg::Receiver(r)) => {
            return Err(Error::new(
                r.span(),
                "a #[message] method takes `&self` or `&mut self`: the actor lives on after a message",
            ))
        }
        _ => {
            return Err(Error::new(
                sig.ident.span(),
                "a #[message] method takes `&self` or `&mut self`",
            ))
        }
    }
    let mut args = Vec::new();
    let mut call = Vec::new();
    let mut port: Option<Type> = None;
    for input in sig.inputs.iter().skip(1) {
        let FnArg::Typed(pt) = input else { continue };
        if is_context(&pt.ty) {
            call.push(CallArg::Ctx);
            continue;
        }
        if let Some(t) = reply_port_of(&pt.ty) {
            if port.is_some() {
                return Err(Error::new(
                    pt.ty.span(),
                    "a #[message] method takes at most one ReplyPort",
                ));
            }
            port = Some(t);
            call.push(CallArg::Port);
            continue;
        }
        let name = match &*pt.pat {
            Pat::Ident(p) => p.ident.clone(),
            other => return Err(Error::new(other.span(), "message arguments need plain names")),
        };
        if matches!(&*pt.ty, Type::Reference(_)) {
            return Err(Error::new(
                pt.ty.span(),
                "message arguments are owned values (they travel in an envelope)",
            ));
        }
        call.push(CallArg::Arg(name.clone()));
        args.push((name, (*pt.ty).clone()));
    }
    if port.is_some() && attr.idempotent {
        return Err(Error::new(
            sig.ident.span(),
            "a message that defers its reply through a ReplyPort cannot be idempotent: the port is handed on, so the message cannot be redelivered",
        ));
    }
    let output = match (&sig.output, &port) {
        (ReturnType::Default, Some(t)) => t.clone(),
        (ReturnType::Type(_, t), Some(_)) => {
            return Err(Error::new(
                t.span(),
                "a #[message] method with a ReplyPort answers through the port: it returns nothing",
            ))
        }
        (ReturnType::Default, None) => syn::parse_quote!(()),
        (ReturnType::Type(_, t), None) => (**t).clone(),
    };
    Ok(Msg {
        method: sig.ident.clone(),
        variant: format_ident!("{}", pascal(&sig.ident.to_string())),
        args,
        call,
        deferred: port.is_some(),
        output,
        is_async: sig.asyncness.is_some(),
        attr,
        docs: f.attrs.iter().filter(|a| a.path().is_ident("doc")).cloned().collect(),
        vis: f.vis.clone(),
    })
}
