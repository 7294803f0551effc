%# The 403 page: reason is "tampered", "expired", "form" or "host" (texts denied.*); days:
%# --link-days; url: the office pages under one of the server's own names.
% rebase("layout", title=t("denied.title"))
<div class="box">
<h1>{{t("denied.title")}}</h1>
<p id="denied-reason" data-reason="{{reason}}">{{t("denied." + reason, days=days, url=get("url", ""))}}</p>
<p><a href="/login">{{t("login.title")}}</a></p>
</div>
