"""The program inside each job pod: yt-dlp and ffmpeg pipelines for one audio job."""
