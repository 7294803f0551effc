%# The "busy, one moment" page (busy_page()): reason is "busy" or "locked" (texts
%# busy.*); posted: it answers a form, whose change was not made.
% rebase("layout", title=t("busy.title"))
<div class="box">
<h1>{{t("busy.title")}}</h1>
<p id="busy-reason" data-reason="{{reason}}">{{t("busy." + reason)}}</p>
% if posted:
<p id="busy-posted">{{t("busy.posted")}}</p>
% else:
<p>{{t("busy.reload")}} <a href="">{{t("busy.again")}}</a></p>
% end
</div>
