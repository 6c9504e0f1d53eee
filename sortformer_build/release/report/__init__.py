"""The release report: report.html beside a sweep's matrix, and the model card's timelines."""
