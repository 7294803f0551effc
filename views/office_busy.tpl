%# The "busy, one moment" page (office_busy_page()): office work waited too long for
%# its lane's turn; posted: it answers a form, whose change was not made.
% rebase("layout", title=t("office_busy.title"))
<div class="box">
<h1>{{t("office_busy.title")}}</h1>
<p id="office-busy">{{t("office_busy.text")}}</p>
% if posted:
<p id="office-busy-posted">{{t("office_busy.posted")}}</p>
% else:
<p>{{t("office_busy.reload")}} <a href="">{{t("office_busy.again")}}</a></p>
% end
</div>
