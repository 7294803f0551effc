%# A caller's page (issue 13 fills it in): number as in the link; by_link: opened by a
%# signed link rather than a session.
% rebase("layout", title=t("caller.title") + " " + number)
<h1>{{t("caller.title")}} <bdi dir="ltr" id="caller-number">{{number}}</bdi></h1>
<p class="muted">{{t("caller.coming")}}</p>
