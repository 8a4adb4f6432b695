//! Shapes: every equation's target and expression typed with symbolic sizes,
//! every mismatch reported with both sides; every state and output defined.

use super::functions::{self, Function};
use super::*;

impl Checker {
    /// Types the equations in dependency order, so every value read is typed first.
    pub(super) fn type_equations(&mut self, order: &[usize]) {
        for &i in order {
            self.type_equation(i);
        }
    }

    pub(super) fn equation_target(&mut self, eq: &ast::Equation, idx: usize) -> Option<Target> {
        let name = &eq.name;
        let found = self.scope.get(&name.name).copied();
        if found.is_none() && self.poisoned.contains(&name.name) {
            return None;
        }
        if eq.primed {
            return match found {
                Some(Ref::State(s)) => {
                    if let Some(prev) = self.state_def[s] {
                        let first = self.equations[prev]
                            .as_ref()
                            .map_or(name.span, |e| e.lhs_span);
                        self.diags.push(
                            Diagnostic::error(
                                "E0051",
                                format!("state `{}` is updated more than once", name.name),
                            )
                            .primary(eq.lhs_span, "updated again here")
                            .secondary(first, "first updated here")
                            .note("a state takes exactly one next value per step"),
                        );
                        return None;
                    }
                    self.state_def[s] = Some(idx);
                    Some(Target::State(s))
                }
                _ => {
                    let d = Diagnostic::error(
                        "E0052",
                        format!(
                            "`{}'` names the next value of a state, but `{}` is not a state",
                            name.name, name.name
                        ),
                    )
                    .primary(eq.lhs_span, "not a state");
                    self.diags.push(match found {
                        None => d.note(format!(
                            "declare it: `state {}: [H]`, or drop the `'`",
                            name.name
                        )),
                        Some(_) => {
                            d.note("only states declared with `state` take a primed equation")
                        }
                    });
                    None
                }
            };
        }
        match found {
            Some(Ref::Output(o)) => {
                if let Some(prev) = self.output_def[o] {
                    let first = self.equations[prev]
                        .as_ref()
                        .map_or(name.span, |e| e.lhs_span);
                    self.diags.push(
                        Diagnostic::error(
                            "E0010",
                            format!("output `{}` is defined more than once", name.name),
                        )
                        .primary(eq.lhs_span, "defined again here")
                        .secondary(first, "first defined here"),
                    );
                    return None;
                }
                self.output_def[o] = Some(idx);
                Some(Target::Output(o))
            }
            Some(Ref::State(_)) => {
                self.diags.push(
                    Diagnostic::error(
                        "E0053",
                        format!(
                            "`{}` is a state; its next value is `{}'`",
                            name.name, name.name
                        ),
                    )
                    .primary(eq.lhs_span, "assigns the state itself")
                    .note(format!("write `{}' = ...`", name.name)),
                );
                None
            }
            Some(Ref::Input(_)) | Some(Ref::Param(_)) => {
                let what = if matches!(found, Some(Ref::Input(_))) {
                    "an input"
                } else {
                    "a parameter"
                };
                self.diags.push(
                    Diagnostic::error(
                        "E0054",
                        format!("cannot assign to `{}`: it is {what}", name.name),
                    )
                    .primary(eq.lhs_span, "assigned here")
                    .secondary(self.decl_span[&name.name], "declared here")
                    .note("inputs and parameters are given, not computed; choose a new name"),
                );
                None
            }
            Some(Ref::Let(_)) => {
                let first = self.decl_span.get(&name.name).copied().unwrap_or(name.span);
                self.diags.push(dup_error(&name.name, name.span, first));
                None
            }
            None => {
                let l = self.lets.len();
                if !self.bind_name(name, Ref::Let(l)) {
                    return None;
                }
                self.lets.push(LetInfo {
                    name: name.name.clone(),
                    span: name.span,
                });
                self.let_def.push(Some(idx));
                Some(Target::Let(l))
            }
        }
    }

    pub(super) fn type_equation(&mut self, i: usize) {
        let Some(eq) = self.equations[i].clone() else {
            return;
        };
        let ty = self.type_expr(&eq.value);
        let names = self.dim_names();
        let (expect, what) = match eq.target {
            Target::Let(l) => {
                self.let_types[l] = ty;
                return;
            }
            Target::State(s) => (&self.states[s], "state"),
            Target::Output(o) => (&self.outputs[o], "output"),
        };
        let want = SymTy::Vector(expect.len.clone());
        match &ty {
            Some(t) if *t != want => {
                let d = Diagnostic::error(
                    "E0032",
                    format!("{what} `{}` has the wrong shape", expect.name),
                )
                .primary(eq.value.span, format!("this is {}", show_ty(t, &names)))
                .secondary(expect.span, format!("declared {}", show_ty(&want, &names)));
                self.diags.push(d);
            }
            _ => {}
        }
    }

    // Long by design: one match arm per expression form of the language,
    // each its shape rule and its diagnostics.
    pub(super) fn type_expr(&mut self, e: &Expr) -> Option<SymTy> {
        match &e.kind {
            ExprKind::Number(v) => {
                if !v.is_finite() {
                    self.diags.push(
                        Diagnostic::error("E0022", "number out of range")
                            .primary(e.span, "too large for a float"),
                    );
                }
                Some(SymTy::Scalar)
            }
            ExprKind::Var { name, primed } => self.type_var(name, *primed, e.span),
            ExprKind::Call { func, args } => {
                let arg_tys: Vec<Option<SymTy>> = args.iter().map(|a| self.type_expr(a)).collect();
                let Some(info) = functions::lookup(&func.name) else {
                    let mut d =
                        Diagnostic::error("E0060", format!("unknown function `{}`", func.name))
                            .primary(func.span, "not a function of the language");
                    let names = functions::FUNCTIONS.iter().map(|f| f.name);
                    d = match suggest(&func.name, names) {
                        Some(s) => d.note(format!("did you mean `{s}`?")),
                        None => d.note(format!("the functions are {}", functions::names())),
                    };
                    self.diags.push(d);
                    return None;
                };
                if args.len() != info.params.len() {
                    let n = info.params.len();
                    self.diags.push(
                        Diagnostic::error(
                            "E0061",
                            format!(
                                "`{}` takes {n} argument{} but {} {} given",
                                func.name,
                                if n == 1 { "" } else { "s" },
                                args.len(),
                                if args.len() == 1 { "was" } else { "were" }
                            ),
                        )
                        .primary(e.span, "wrong number of arguments")
                        .note(format!("write `{}`", info.signature())),
                    );
                    return None;
                }
                if info.function.reduces() && arg_tys[0] == Some(SymTy::Scalar) {
                    self.diags.push(
                        Diagnostic::error(
                            "E0062",
                            format!("`{}` reduces a vector, not a number", func.name),
                        )
                        .primary(args[0].span, "this is a number")
                        .note(format!(
                            "`{}` reads every unit of a vector `v` of each batch row",
                            info.signature()
                        )),
                    );
                    return None;
                }
                match info.function {
                    // A number was refused above.
                    Function::Reduce(_) => {
                        arg_tys.into_iter().next().flatten()?;
                        Some(SymTy::Vector(Poly::constant(1)))
                    }
                    _ => {
                        let items: Vec<(Span, Option<SymTy>)> =
                            args.iter().map(|a| a.span).zip(arg_tys).collect();
                        self.elementwise(&items, info.name)
                    }
                }
            }
            ExprKind::Neg(inner) => self.type_expr(inner),
            ExprKind::Sum(terms) => {
                let items: Vec<(Span, Option<SymTy>)> = terms
                    .iter()
                    .map(|(_, t)| (t.span, self.type_expr(t)))
                    .collect();
                self.elementwise(&items, "+")
            }
            ExprKind::Product(factors) => {
                let items: Vec<(Span, Option<SymTy>)> = factors
                    .iter()
                    .map(|(_, f)| (f.span, self.type_expr(f)))
                    .collect();
                self.elementwise(&items, "*")
            }
            ExprKind::MatVec { matrices, vector } => {
                let mut ty = self.type_expr(vector)?;
                let mut operand_span = vector.span;
                for m in matrices.iter().rev() {
                    let names = self.dim_names();
                    let (rows, cols) = match self.scope.get(&m.name).copied() {
                        Some(Ref::Param(p)) => match &self.params[p].ty {
                            SymTy::Matrix(r, c) => (r.clone(), c.clone()),
                            other => {
                                self.diags.push(
                                        Diagnostic::error(
                                            "E0033",
                                            format!("`{}` is not a matrix", m.name),
                                        )
                                        .primary(m.span, format!("this is {}", show_ty(other, &names)))
                                        .secondary(self.params[p].span, "declared here")
                                        .note("`@` multiplies a matrix `[rows, cols]` by a vector `[cols]`; use `*` for element-wise products"),
                                    );
                                return None;
                            }
                        },
                        Some(_) => {
                            self.diags.push(
                                Diagnostic::error(
                                    "E0033",
                                    format!("`{}` is not a matrix parameter", m.name),
                                )
                                .primary(m.span, "only parameters can be matrices")
                                .note("declare it: `param W: [rows, cols]`"),
                            );
                            return None;
                        }
                        None => {
                            self.undefined(m);
                            return None;
                        }
                    };
                    match &ty {
                        SymTy::Vector(n) if *n == cols => {}
                        other => {
                            let shown = show_ty(other, &names);
                            self.diags.push(
                                Diagnostic::error(
                                    "E0031",
                                    format!(
                                        "shape mismatch in `{} @ ...`: `{}` is [{}, {}] and the vector is {}",
                                        m.name,
                                        m.name,
                                        rows.display(&names),
                                        cols.display(&names),
                                        shown
                                    ),
                                )
                                .primary(operand_span, format!("this is {shown}"))
                                .secondary(
                                    m.span,
                                    format!("expects a vector of length {}", cols.display(&names)),
                                )
                                .note("the number of columns of the matrix must equal the length of the vector"),
                            );
                            return None;
                        }
                    }
                    ty = SymTy::Vector(rows);
                    operand_span = m.span.to(operand_span);
                }
                Some(ty)
            }
        }
    }

    pub(super) fn type_var(&mut self, name: &Ident, primed: bool, span: Span) -> Option<SymTy> {
        let found = self.scope.get(&name.name).copied();
        let names = self.dim_names();
        if primed {
            return match found {
                Some(Ref::State(s)) => Some(SymTy::Vector(self.states[s].len.clone())),
                Some(_) => {
                    self.diags.push(
                        Diagnostic::error(
                            "E0052",
                            format!(
                                "`{}` is not a state, so `{}'` means nothing",
                                name.name, name.name
                            ),
                        )
                        .primary(span, "only states have a next value"),
                    );
                    None
                }
                None => {
                    self.undefined(name);
                    None
                }
            };
        }
        match found {
            None => {
                self.undefined(name);
                None
            }
            Some(Ref::Input(i)) => Some(SymTy::Vector(self.inputs[i].len.clone())),
            Some(Ref::State(s)) => Some(SymTy::Vector(self.states[s].len.clone())),
            Some(Ref::Param(p)) => match &self.params[p].ty {
                SymTy::Matrix(r, c) => {
                    self.diags.push(
                        Diagnostic::error(
                            "E0021",
                            format!("matrix `{}` used as a vector", name.name),
                        )
                        .primary(
                            span,
                            format!(
                                "this is a [{}, {}] matrix",
                                r.display(&names),
                                c.display(&names)
                            ),
                        )
                        .note(format!("apply it to a vector with `{} @ v`", name.name)),
                    );
                    None
                }
                t => Some(t.clone()),
            },
            Some(Ref::Let(l)) => self.let_types[l].clone(),
            Some(Ref::Output(o)) => Some(SymTy::Vector(self.outputs[o].len.clone())),
        }
    }

    pub(super) fn undefined(&mut self, name: &Ident) {
        if self.poisoned.contains(&name.name) {
            return;
        }
        let candidates: Vec<&str> = self.scope.keys().map(String::as_str).collect();
        let mut d = Diagnostic::error("E0011", format!("undefined name `{}`", name.name))
            .primary(name.span, "not declared or defined anywhere in this cell");
        d = match suggest(&name.name, candidates.into_iter()) {
            Some(s) => d.note(format!("did you mean `{s}`?")),
            None => {
                d.note("declare it with `input`, `state` or `param`, or define it with an equation")
            }
        };
        self.diags.push(d);
    }

    /// The type of an element-wise combination: numbers and vectors of length
    /// 1 broadcast, other vectors must agree.
    pub(super) fn elementwise(
        &mut self,
        items: &[(Span, Option<SymTy>)],
        op: &str,
    ) -> Option<SymTy> {
        let one = SymTy::Vector(Poly::constant(1));
        // The widest operand so far: a number, then `[1]`, then any vector.
        let rank = |t: &SymTy| match t {
            SymTy::Scalar => 0,
            t if *t == one => 1,
            _ => 2,
        };
        let mut result: Option<(Span, SymTy)> = None;
        let mut ok = true;
        for (span, ty) in items {
            let Some(ty) = ty else {
                ok = false;
                continue;
            };
            match &result {
                None => result = Some((*span, ty.clone())),
                Some((_, first)) if rank(ty) < 2 || rank(first) < 2 => {
                    if rank(ty) > rank(first) {
                        result = Some((*span, ty.clone()));
                    }
                }
                Some((first_span, first)) => {
                    if first != ty {
                        let names = self.dim_names();
                        self.diags.push(
                            Diagnostic::error(
                                "E0030",
                                format!("element-wise `{op}` of vectors of different lengths"),
                            )
                            .primary(*span, format!("this is {}", show_ty(ty, &names)))
                            .secondary(*first_span, format!("this is {}", show_ty(first, &names)))
                            .note(
                                "element-wise operations need vectors of one length (or a number, or a `[1]` such as `mean(v)`, which broadcast)",
                            ),
                        );
                        ok = false;
                    }
                }
            }
        }
        if !ok {
            return None;
        }
        Some(result.map_or(SymTy::Scalar, |(_, t)| t))
    }

    pub(super) fn check_definitions(&mut self) {
        for (s, def) in self.state_def.clone().into_iter().enumerate() {
            if def.is_none() {
                let st = &self.states[s];
                self.diags.push(
                    Diagnostic::error("E0050", format!("state `{}` is never updated", st.name))
                        .primary(
                            st.span,
                            "declared here, but no equation gives its next value",
                        )
                        .note(format!(
                            "write `{}' = ...` (or `{}' = {}` to keep it unchanged)",
                            st.name, st.name, st.name
                        )),
                );
            }
        }
        for (o, def) in self.output_def.clone().into_iter().enumerate() {
            if def.is_none() {
                let out = &self.outputs[o];
                self.diags.push(
                    Diagnostic::error("E0055", format!("output `{}` is never defined", out.name))
                        .primary(out.span, "declared here, but no equation defines it")
                        .note(format!("write `{} = ...`", out.name)),
                );
            }
        }
    }

    pub(super) fn warn_unused(&mut self) {
        for (p, used) in self.used_params.iter().enumerate() {
            if !used {
                let param = &self.params[p];
                self.diags.push(
                    Diagnostic::warning(
                        "W0001",
                        format!("parameter `{}` is never used", param.name),
                    )
                    .primary(param.span, "declared here")
                    .note("remove it, or use it in an equation"),
                );
            }
        }
        for (l, used) in self.used_lets.iter().enumerate() {
            if !used {
                let v = &self.lets[l];
                self.diags.push(
                    Diagnostic::warning("W0002", format!("value `{}` is never used", v.name))
                        .primary(v.span, "defined here")
                        .note("it does not reach any state or output"),
                );
            }
        }
        for (i, used) in self.used_inputs.iter().enumerate() {
            if !used {
                let v = &self.inputs[i];
                self.diags.push(
                    Diagnostic::warning("W0003", format!("input `{}` is never used", v.name))
                        .primary(v.span, "declared here"),
                );
            }
        }
    }
}
