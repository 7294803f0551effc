%# The 403 page: reason is "tampered", "expired" or "form" (texts denied.*); days: --link-days.
% rebase("layout", title=t("denied.title"))
<div class="box">
<h1>{{t("denied.title")}}</h1>
<p id="denied-reason" data-reason="{{reason}}">{{t("denied." + reason, days=days)}}</p>
<p><a href="/login">{{t("login.title")}}</a></p>
</div>
