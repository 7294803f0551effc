%# The 500 page: a page could not be made (office_page(); the log has the traceback).
% rebase("layout", title=t("error.title"))
<div class="box">
<h1>{{t("error.title")}}</h1>
<p id="error-reason" data-reason="internal">{{t("error.internal")}}</p>
</div>
