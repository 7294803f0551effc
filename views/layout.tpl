<!doctype html>
%# The office pages' layout: a page does  % rebase("layout", title=...)  and is shown in
%# {{!base}}. Given by render_page(): t (the texts), lang, direction, nonce (the CSP's,
%# for the one <style>), csrf and signed_in (the logout form), refresh (seconds or None).
%# Values from files or requests go in <bdi> (or dir="auto"), so that a Latin name or a
%# number keeps its order inside Hebrew text.
<html lang="{{lang}}" dir="{{direction}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
%# No icon: without this line every page's load also asks /favicon.ico (a 404 logged).
<link rel="icon" href="data:,">
% if refresh:
<meta http-equiv="refresh" content="{{refresh}}">
% end
<title>{{title}} · {{t("app.name")}}</title>
<style nonce="{{nonce}}">
  :root { --missed: #b42318; --ok: #067647; --muted: #667085; --line: #eaecf0; }
  body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Arial, "Noto Sans Hebrew", sans-serif;
         margin: 0 auto; max-width: 72rem; padding: 1rem; color: #101828; }
  h1 { font-size: 1.3rem; margin: 0 0 .75rem; }
  h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
  .status { display: flex; flex-wrap: wrap; gap: .25rem 1.25rem; padding: .6rem .8rem;
            background: #f9fafb; border: 1px solid var(--line); border-radius: .5rem; }
  .status .error, .error { color: var(--missed); font-weight: 600; flex-basis: 100%; }
  form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin: .75rem 0; }
  input[type=tel], input[type=date], input[type=password] { font: inherit; padding: .35rem .5rem;
            border: 1px solid #d0d5dd; border-radius: .375rem; }
  button { font: inherit; padding: .35rem .9rem; border: 0; border-radius: .375rem;
           background: #1d4ed8; color: #fff; cursor: pointer; }
  pre { background: #f2f4f7; padding: .6rem .8rem; border-radius: .375rem; overflow-x: auto;
        white-space: pre-wrap; word-break: break-all; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: start; padding: .45rem .5rem; border-bottom: 1px solid var(--line);
           vertical-align: top; }
  th { font-size: .8rem; color: var(--muted); font-weight: 600; }
  tr.missed td.outcome { color: var(--missed); font-weight: 700; }
  tr.answered td.outcome { color: var(--ok); }
  .muted { color: var(--muted); }
  .nav a { margin-inline-end: 1rem; }
  td form { margin: 0; gap: .35rem; }
  #summary .count { margin-inline-end: .75rem; }
  tr.waiting td.name b { color: var(--missed); }
  .callback-answer { padding: .5rem .8rem; border-radius: .5rem; font-weight: 600; }
  .callback-answer.ok { background: #ecfdf3; color: var(--ok); }
  .callback-answer.error { background: #fef3f2; }
  .callback-pending { color: #1d4ed8; font-weight: 600; }
  header.bar { display: flex; justify-content: flex-end; }
  header.bar form { margin: 0; }
  header.bar button { background: none; color: #1d4ed8; padding: 0; }
  .box { max-width: 26rem; margin: 3rem auto; padding: 1.25rem 1.5rem; border: 1px solid var(--line);
         border-radius: .75rem; }
  .box form { flex-direction: column; align-items: stretch; }
  @media (max-width: 40rem) {
    thead { display: none; }
    tr { display: block; border-bottom: 1px solid var(--line); padding: .4rem 0; }
    td { display: inline-block; border: 0; padding: .15rem .5rem .15rem 0; }
    td.name { display: block; font-weight: 600; }
  }
</style>
</head>
<body>
% if signed_in:
<header class="bar">
  <form method="post" action="/logout" id="logout-form">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <button type="submit">{{t("logout")}}</button>
  </form>
</header>
% end
{{!base}}
</body>
</html>
