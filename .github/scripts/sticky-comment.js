// Create or update the one pull-request comment that carries the offline preview diff.
// The comment is found again by the marker the report starts with
// (MARKER in preview/diff_report.py), so every push edits it instead of adding another.
const fs = require('fs');

const MARKER = '<!-- tikit-preview -->';

module.exports = async ({ github, context, core, reportPath, issueNumber }) => {
  const body = fs.readFileSync(reportPath, 'utf8');
  if (!body.startsWith(MARKER)) {
    core.setFailed(`${reportPath} does not start with ${MARKER}`);
    return;
  }
  const { owner, repo } = context.repo;
  const comments = await github.paginate(github.rest.issues.listComments, {
    owner,
    repo,
    issue_number: issueNumber,
    per_page: 100,
  });
  // Only our own bot's comment: a reviewer quoting the report must not be overwritten.
  const mine = comments.find((c) => c.user && c.user.type === 'Bot' && (c.body || '').startsWith(MARKER));
  if (mine) {
    await github.rest.issues.updateComment({ owner, repo, comment_id: mine.id, body });
    core.info(`updated ${mine.html_url}`);
  } else {
    const { data } = await github.rest.issues.createComment({ owner, repo, issue_number: issueNumber, body });
    core.info(`created ${data.html_url}`);
  }
};
